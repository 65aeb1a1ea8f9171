package topology

import (
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// The demo's network: bridge tpdemo0 with 172.31.250.1/24 and fd00:7470::1/64 in the root
// namespace, the container's eth0 with .2 and ::2.
const (
	DemoBridge = "tpdemo0"
	demoNet4   = "172.31.250.0/24"
	demoNet6   = "fd00:7470::/64"
)

// ErrDemoInUse is returned by SweepDemo when a live process owns the demo bridge.
var ErrDemoInUse = errors.New("demo network in use")

// DemoInUseError says which process owns a demo bridge.
type DemoInUseError struct {
	Bridge string
	Pid    int
}

func (e *DemoInUseError) Error() string {
	return fmt.Sprintf("demo bridge %s is in use by live process %d", e.Bridge, e.Pid)
}

func (e *DemoInUseError) Is(target error) bool { return target == ErrDemoInUse }

// Demo is the demo's network, owned by the calling process: DemoConfig(DemoBridge,
// 172.31.250.0/24, fd00:7470::/64).
func Demo() DockerBridgeConfig {
	return DemoConfig(DemoBridge, netip.MustParsePrefix(demoNet4), netip.MustParsePrefix(demoNet6))
}

// DemoConfig is a demo network on bridge, owned by the calling process: its alias records
// the owner ("tracepkt-perf demo pid <pid> start <ticks>"), the host veth is "<bridge>h" and
// the container namespace "<bridge>-<pid>", so that SweepDemo can find all of it.
func DemoConfig(bridge string, v4, v6 netip.Prefix) DockerBridgeConfig {
	pid := os.Getpid()
	start, _, _ := procStart(pid)
	return DockerBridgeConfig{
		Bridge:   bridge,
		HostVeth: bridge + "h",
		Netns:    demoNetnsName(bridge, pid),
		V4:       v4,
		V6:       v6,
		Alias:    demoOwner{pid, start}.alias(),
	}
}

func demoNetnsName(bridge string, pid int) string { return bridge + "-" + strconv.Itoa(pid) }

// demoNetnsPid returns the pid in the name of a demo namespace of bridge:
// "<bridge>-<pid>", or that with a suffix of the demo's other namespaces.
func demoNetnsPid(bridge, name string) (int, bool) {
	pidText, ok := strings.CutPrefix(name, bridge+"-")
	if !ok {
		return 0, false
	}
	for _, suffix := range []string{demoFirewallSuffix, demoRouterSuffix, demoFarSuffix, demoNodeSuffix, demoPodSuffix} {
		if p, ok := strings.CutSuffix(pidText, suffix); ok {
			pidText = p
			break
		}
	}
	pid, err := strconv.Atoi(pidText)
	if err != nil || pid <= 0 || strconv.Itoa(pid) != pidText {
		return 0, false
	}
	return pid, true
}

// demoOwner identifies a process across pid reuse: pid and start time.
type demoOwner struct {
	pid   int
	start uint64 // field 22 of /proc/<pid>/stat, clock ticks after boot; 0 if unknown
}

const demoAliasPrefix = "tracepkt-perf demo pid "

func (o demoOwner) alias() string {
	return fmt.Sprintf("%s%d start %d", demoAliasPrefix, o.pid, o.start)
}

func parseDemoAlias(alias string) (demoOwner, bool) {
	rest, ok := strings.CutPrefix(alias, demoAliasPrefix)
	if !ok {
		return demoOwner{}, false
	}
	f := strings.Fields(rest)
	if len(f) == 0 {
		return demoOwner{}, false
	}
	pid, err := strconv.Atoi(f[0])
	if err != nil || pid <= 0 {
		return demoOwner{}, false
	}
	o := demoOwner{pid: pid}
	if len(f) == 3 && f[1] == "start" {
		o.start, _ = strconv.ParseUint(f[2], 10, 64)
	}
	return o, true
}

// alive reports whether the owner still runs: same pid, same start time, not a zombie.
func (o demoOwner) alive() bool {
	start, state, err := procStart(o.pid)
	if err != nil || state == 'Z' || state == 'X' {
		return false
	}
	return o.start == 0 || start == o.start
}

// procStart reads the start time and state of pid from /proc/<pid>/stat.
func procStart(pid int) (start uint64, state byte, err error) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return 0, 0, err
	}
	// The command name, field 2, is in parentheses and may hold anything.
	i := strings.LastIndexByte(string(b), ')')
	if i < 0 {
		return 0, 0, fmt.Errorf("parse /proc/%d/stat", pid)
	}
	f := strings.Fields(string(b[i+1:]))
	if len(f) < 20 {
		return 0, 0, fmt.Errorf("parse /proc/%d/stat: %d fields", pid, len(f)+2)
	}
	start, err = strconv.ParseUint(f[19], 10, 64) // field 22
	if err != nil {
		return 0, 0, fmt.Errorf("parse /proc/%d/stat: %w", pid, err)
	}
	return start, f[0][0], nil
}

// SweepDemo removes what a dead demo left on bridge: the bridge, its ports and the links
// sharing its alias in the caller's namespace, and the demo namespaces "<bridge>-<pid>"
// (and "<bridge>-<pid>-fw", "-r", "-far", "-node", "-pod") whose process is gone. It returns an error
// wrapping ErrDemoInUse if a live process owns the bridge, and an error if a link called
// bridge exists that no demo created. Nothing left is not an error.
func SweepDemo(bridge string) error {
	if err := validLinkName(bridge); err != nil {
		return fmt.Errorf("sweep demo: %w", err)
	}
	root, err := RootNetns()
	if err != nil {
		return fmt.Errorf("sweep demo %s: %w", bridge, err)
	}
	h, err := root.handle()
	if err != nil {
		return fmt.Errorf("sweep demo %s: %w", bridge, err)
	}
	defer h.Close()

	deadPid := 0
	br, err := h.LinkByName(bridge)
	var nf netlink.LinkNotFoundError
	switch {
	case errors.As(err, &nf):
	case err != nil:
		return fmt.Errorf("sweep demo %s: %w", bridge, err)
	default:
		alias := br.Attrs().Alias
		owner, ok := parseDemoAlias(alias)
		if !ok {
			return fmt.Errorf("sweep demo: link %s exists but no demo created it (alias %q); remove it by hand", bridge, alias)
		}
		if owner.alive() {
			return &DemoInUseError{Bridge: bridge, Pid: owner.pid}
		}
		links, err := h.LinkList()
		if err != nil {
			return fmt.Errorf("sweep demo %s: list links: %w", bridge, err)
		}
		var errs []error
		for _, l := range links {
			a := l.Attrs()
			if a.Index != br.Attrs().Index && (a.MasterIndex == br.Attrs().Index || a.Alias == alias) {
				// A veth: its peer in the demo namespace goes with it.
				if err := h.LinkDel(l); err != nil && !errors.Is(err, unix.ENODEV) {
					errs = append(errs, fmt.Errorf("delete %s: %w", a.Name, err))
				}
			}
		}
		if err := h.LinkDel(br); err != nil && !errors.Is(err, unix.ENODEV) {
			errs = append(errs, fmt.Errorf("delete %s: %w", bridge, err))
		}
		if err := errors.Join(errs...); err != nil {
			return fmt.Errorf("sweep demo %s (owner pid %d gone): %w", bridge, owner.pid, err)
		}
		deadPid = owner.pid
	}

	entries, err := os.ReadDir(netnsRunDir)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("sweep demo %s: %w", bridge, err)
	}
	var errs []error
	for _, e := range entries {
		pid, ok := demoNetnsPid(bridge, e.Name())
		if !ok {
			continue
		}
		if pid != deadPid && (demoOwner{pid: pid}).alive() {
			continue
		}
		if err := removeNamedNetns(filepath.Join(netnsRunDir, e.Name())); err != nil {
			errs = append(errs, err)
		}
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("sweep demo %s: %w", bridge, err)
	}
	return nil
}

package probes

import (
	"errors"
	"fmt"
	"os"
	"strings"

	"github.com/cilium/ebpf/btf"

	"github.com/tracepkt/tracepkt-perf/decode"
)

// ErrNoModuleBTF is returned for a netfilter function whose module is loaded
// but has no BTF: kernels before 5.11, or built without
// CONFIG_DEBUG_INFO_BTF_MODULES.
var ErrNoModuleBTF = errors.New("its module has no BTF (kernel before 5.11, or built without CONFIG_DEBUG_INFO_BTF_MODULES)")

// ErrModuleNotLoaded is returned for a netfilter function whose module is not
// loaded: there are no rules of that kind to show.
var ErrModuleNotLoaded = errors.New("its module is not loaded: no rules of that kind to show")

// NetfilterArgs says how a netfilter function's arguments were found: in
// BTF (its module's, or vmlinux's when built in), or, for a module without
// BTF, from the kernel version.
type NetfilterArgs struct {
	Params      []string // parameter names, in order
	Module      string   // the module holding the function, "" when built in
	FromVersion string   // the kernel release the order was taken from, "" when from BTF
}

func (a NetfilterArgs) String() string {
	params := "(" + strings.Join(a.Params, ", ") + ")"
	switch {
	case a.FromVersion != "":
		return fmt.Sprintf("arguments %s from the kernel version (%s; the order changed in 5.16): module %s has no BTF", params, a.FromVersion, a.Module)
	case a.Module != "":
		return fmt.Sprintf("arguments %s from the BTF of module %s", params, a.Module)
	}
	return fmt.Sprintf("arguments %s from the kernel's BTF", params)
}

// moduleNotLoaded says that p's function is in a module not loaded.
func moduleNotLoaded(p decode.Probe) error {
	return fmt.Errorf("%s (module %s): %w", p.Kprobe(), netfilterModule[p], ErrModuleNotLoaded)
}

// kernelNetfilterProto finds the prototype of probe p's function on the
// running kernel, and the BTF that describes its module's structs: the
// module's own, vmlinux's when the function is built in, and for a module
// loaded without BTF, vmlinux's with the prototype of the kernel's version
// (iptables-legacy only: struct xt_table is in vmlinux's BTF, nftables'
// structs are not).
func kernelNetfilterProto(base *btf.Spec, p decode.Probe) (*btf.Spec, *btf.FuncProto, NetfilterArgs, error) {
	fn, mod := p.Kprobe(), netfilterModule[p]
	if _, err := os.Stat("/sys/kernel/btf/" + mod); err == nil {
		spec, err := moduleBTF(mod)
		if err != nil {
			return nil, nil, NetfilterArgs{}, fmt.Errorf("btf of module %s: %w", mod, err)
		}
		proto, err := funcProto(spec, fn)
		return spec, proto, newNetfilterArgs(proto, mod, ""), err
	}
	if proto, err := funcProto(base, fn); err == nil {
		return base, proto, newNetfilterArgs(proto, "", ""), nil
	} else if !errors.Is(err, btf.ErrNotFound) {
		return nil, nil, NetfilterArgs{}, err
	}
	if _, err := os.Stat("/sys/module/" + mod); err != nil {
		return nil, nil, NetfilterArgs{}, moduleNotLoaded(p)
	}
	if !isLegacyTable(p) {
		return nil, nil, NetfilterArgs{}, fmt.Errorf("%s (module %s): %w: the structs it reads are not in vmlinux's BTF", fn, mod, ErrNoModuleBTF)
	}
	release, major, minor, err := kernelVersion()
	if err != nil {
		return nil, nil, NetfilterArgs{}, err
	}
	proto, err := legacyTableProto(base, major, minor)
	if err != nil {
		return nil, nil, NetfilterArgs{}, err
	}
	return base, proto, newNetfilterArgs(proto, mod, release), nil
}

func newNetfilterArgs(proto *btf.FuncProto, mod, release string) NetfilterArgs {
	if proto == nil {
		return NetfilterArgs{}
	}
	a := NetfilterArgs{Module: mod, FromVersion: release}
	for _, p := range proto.Params {
		a.Params = append(a.Params, p.Name)
	}
	return a
}

// legacyTableProto is the prototype of ipt_do_table and ip6t_do_table on a
// kernel of version major.minor, built from vmlinux types, for a kernel whose
// ip_tables module has no BTF to read it from. Module BTF came in 5.11, the
// order changed in 5.16, so on the kernels this serves it is nearly always
// (skb, state, table); a kernel that backported the change to a release
// without module BTF would be misread, which is why the notes say where the
// order came from.
func legacyTableProto(base *btf.Spec, major, minor int) (*btf.FuncProto, error) {
	ptrTo := func(name string) (btf.Type, error) {
		var s *btf.Struct
		if err := base.TypeByName(name, &s); err != nil {
			return nil, fmt.Errorf("btf: struct %s: %w", name, err)
		}
		return &btf.Pointer{Target: s}, nil
	}
	skb, err := ptrTo("sk_buff")
	if err != nil {
		return nil, err
	}
	state, err := ptrTo("nf_hook_state")
	if err != nil {
		return nil, err
	}
	uint := &btf.Int{Name: "unsigned int", Size: 4}
	if major > 5 || major == 5 && minor >= 16 {
		return &btf.FuncProto{Return: uint, Params: []btf.FuncParam{
			{Name: "priv", Type: &btf.Pointer{Target: &btf.Void{}}}, {Name: "skb", Type: skb}, {Name: "state", Type: state},
		}}, nil
	}
	table, err := ptrTo("xt_table")
	if err != nil {
		return nil, err
	}
	return &btf.FuncProto{Return: uint, Params: []btf.FuncParam{
		{Name: "skb", Type: skb}, {Name: "state", Type: state}, {Name: "table", Type: table},
	}}, nil
}

// parseRelease reads major and minor from a kernel release ("5.10.0-46-amd64").
func parseRelease(release string) (major, minor int, err error) {
	if _, err := fmt.Sscanf(release, "%d.%d", &major, &minor); err != nil {
		return 0, 0, fmt.Errorf("kernel release %q: no major.minor version: %w", release, err)
	}
	return major, minor, nil
}

// isLegacyTable says whether p probes an iptables-legacy table function.
func isLegacyTable(p decode.Probe) bool {
	return p == decode.ProbeIptDoTable || p == decode.ProbeIp6tDoTable
}

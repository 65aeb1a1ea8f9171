package vmtest

import (
	"fmt"
	"path"
	"strings"
)

// Paths the two guest scripts share with the host and with each other.
const (
	guestOutDir    = "/run/vmtest"           // the writable "out" share, seen from inside the chroot
	guestRunScript = guestOutDir + "/run.sh" // written by the host before boot
	guestStatus    = guestOutDir + "/status" // one "index exit-code" line per finished command
	guestFilesDir  = guestOutDir + "/files"  // what commands leave for the host (Config.Files)
	runScriptName  = "run.sh"
	statusName     = "status"
	filesName      = "files"
	msize          = 512 << 10 // 9p message size: the 8 KiB default makes reading test binaries slow
)

// busyboxApplets are the commands initScript uses; each is a symlink to
// /bin/busybox in the initramfs.
var busyboxApplets = []string{"sh", "mount", "mkdir", "insmod", "ip", "env", "chroot", "sync", "poweroff", "chmod", "cp"}

// initScript is the guest's /init, run by busybox sh: it inserts modules in
// order, mounts the host root and the out share, and runs the run script
// chrooted into the host root. It powers the guest off on every path so a
// failed set-up ends the boot at once instead of waiting for the timeout.
// modulesDir is the host directory of the booted kernel's modules; when it
// is not /lib/modules/<release> (a kernel unpacked elsewhere, never
// installed), it is bound there, so that modprobe in the chroot finds them.
func initScript(modules []Module, modulesDir string) string {
	var b strings.Builder
	b.WriteString(`#!/bin/sh
export PATH=/bin
halt() {
	sync
	poweroff -f
}
fail() {
	echo "vm: $*" >&2
	halt
}
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
`)
	for _, m := range modules {
		fmt.Fprintf(&b, "insmod /lib/modules/%s.ko || fail 'insmod %s failed'\n", m.Name, m.Name)
	}
	fmt.Fprintf(&b, `opts=trans=virtio,version=9p2000.L,msize=%d
# The host root is read-only here and nothing changes it while the guest
# runs: cache=loose keeps what the guest read in its page cache, so each
# exec of ip, nft or the test binary is not read over 9p again (120 execs
# of ip, nft and iptables took 15.3 s uncached in the 6.1 guest, 6.1 s
# cached). The out share, which both sides write, stays uncached.
mount -t 9p -o ro,cache=loose,$opts host /host || fail 'mount the host root over 9p failed'
mount -t proc proc /host/proc || fail 'mount proc failed'
mount -t sysfs sysfs /host/sys || fail 'mount sysfs failed'
mount -t devtmpfs devtmpfs /host/dev || fail 'mount devtmpfs failed'
mount -t tracefs tracefs /host/sys/kernel/tracing || fail 'mount tracefs failed'
mount -t bpf bpf /host/sys/fs/bpf || fail 'mount bpffs failed'
mount -t tmpfs tmpfs /host/run || fail 'mount tmpfs on /run failed'
%[5]s# A machine's /var/cache is writable, and programs keep there what they
# learn (the tool its kernel facts): in the guest it lasts for the boot.
# After the modules' bind above, which may come from under it.
mount -t tmpfs -o mode=0755 tmpfs /host/var/cache || fail 'mount tmpfs on /var/cache failed'
mkdir /host%[4]s
mkdir /host%[2]s
mount -t 9p -o $opts out /host%[2]s || fail 'mount the out share failed'
ip link set lo up || fail 'bring up lo failed'
# The kernel runs its module loader from this root, tools such as
# iptables-legacy run it from the chroot: one wrapper, at a path both roots
# have, hands requests (veth, bridge, nf_tables, iptable_filter...) to the
# host's modprobe.
mkdir -p /run
printf '#!/bin/sh\nif [ -d /host/sbin ]; then exec /bin/chroot /host /sbin/modprobe "$@"; fi\nexec /sbin/modprobe "$@"\n' >/run/modprobe
chmod 755 /run/modprobe
cp /run/modprobe /host/run/modprobe
echo /run/modprobe >/proc/sys/kernel/modprobe || fail 'set the module loader failed'
env -i /bin/chroot /host /bin/sh %[3]s
halt
`, msize, guestOutDir, guestRunScript, GuestTmp, bindModules(modulesDir))
	return b.String()
}

// bindModules returns the init lines that show modulesDir at
// /lib/modules/<release> in the chroot, or nothing when it is there already.
// A tmpfs over /lib/modules gives the mount point, since the host root is
// read-only; the guest needs no other kernel's modules.
func bindModules(modulesDir string) string {
	release := path.Base(modulesDir)
	if path.Clean(modulesDir) == "/lib/modules/"+release {
		return ""
	}
	return fmt.Sprintf(`mount -t tmpfs tmpfs /host/lib/modules || fail 'mount tmpfs on /lib/modules failed'
mkdir /host/lib/modules/%[1]s
mount -o bind %[2]s /host/lib/modules/%[1]s || fail 'bind the kernel modules on /lib/modules failed'
`, shellQuote(release), shellQuote("/host"+path.Clean(modulesDir)))
}

// runScript is the run script: POSIX sh run by the host's own /bin/sh inside
// the chroot. Each command runs in a subshell in workdir with only env set and
// stdin from /dev/null, and its exit status is appended to the status file
// as soon as it ends, so a crash part-way shows which command it hit.
func runScript(commands [][]string, workdir string, env []string) string {
	var b strings.Builder
	b.WriteString("#!/bin/sh\n")
	for _, kv := range env {
		k, v, _ := strings.Cut(kv, "=")
		fmt.Fprintf(&b, "export %s=%s\n", k, shellQuote(v))
	}
	for i, argv := range commands {
		quoted := make([]string, len(argv))
		for j, a := range argv {
			quoted[j] = shellQuote(a)
		}
		line := strings.Join(quoted, " ")
		fmt.Fprintf(&b, "printf '%%s\\n' %s\n", shellQuote(fmt.Sprintf("vm: [%d/%d] %s", i+1, len(commands), strings.Join(argv, " "))))
		fmt.Fprintf(&b, "(cd %s && exec %s) </dev/null\n", shellQuote(workdir), line)
		fmt.Fprintf(&b, "echo \"%d $?\" >>%s\n", i+1, guestStatus)
	}
	return b.String()
}

// shellQuote quotes s for POSIX sh: in single quotes, where each quote inside s
// closes the quoting, adds an escaped quote and reopens it.
func shellQuote(s string) string {
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}

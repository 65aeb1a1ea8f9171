package vmtest

import (
	"os/exec"
	"strings"
	"testing"

	"github.com/tracepkt/tracepkt-perf/internal/testenv"
)

func TestShellQuoteRoundTrip(t *testing.T) {
	testenv.RequireCommands(t, "sh")
	sh, err := exec.LookPath("sh")
	if err != nil {
		t.Fatal(err)
	}
	args := []string{"plain", "", "it's", `"double" $HOME \n`, "a b\tc", "'''", "semi;colon|pipe&"}
	quoted := make([]string, len(args))
	for i, a := range args {
		quoted[i] = shellQuote(a)
	}
	out, err := exec.Command(sh, "-c", `printf '%s\0' `+strings.Join(quoted, " ")).Output()
	if err != nil {
		t.Fatal(err)
	}
	got := strings.Split(strings.TrimSuffix(string(out), "\x00"), "\x00")
	if len(got) != len(args) {
		t.Fatalf("sh saw %q, want %q", got, args)
	}
	for i := range args {
		if got[i] != args[i] {
			t.Errorf("arg %d: sh saw %q, want %q", i, got[i], args[i])
		}
	}
}

func TestRunScript(t *testing.T) {
	got := runScript([][]string{{"/x/a.test", "-test.v"}, {"sh", "-c", "exit 3"}}, "/work/it's", []string{"TRACEPKT_VM=1", "HOME=/tmp"})
	want := `#!/bin/sh
export TRACEPKT_VM='1'
export HOME='/tmp'
printf '%s\n' 'vm: [1/2] /x/a.test -test.v'
(cd '/work/it'\''s' && exec '/x/a.test' '-test.v') </dev/null
echo "1 $?" >>/run/vmtest/status
printf '%s\n' 'vm: [2/2] sh -c exit 3'
(cd '/work/it'\''s' && exec 'sh' '-c' 'exit 3') </dev/null
echo "2 $?" >>/run/vmtest/status
`
	if got != want {
		t.Errorf("run script:\n%s\nwant:\n%s", got, want)
	}
}

func TestInitScriptInsertsModulesInOrder(t *testing.T) {
	got := initScript([]Module{{Name: "virtio_ring"}, {Name: "virtio"}, {Name: "9p"}}, "/lib/modules/6.1.0-57-amd64")
	want := "insmod /lib/modules/virtio_ring.ko || fail 'insmod virtio_ring failed'\n" +
		"insmod /lib/modules/virtio.ko || fail 'insmod virtio failed'\n" +
		"insmod /lib/modules/9p.ko || fail 'insmod 9p failed'\n"
	if !strings.Contains(got, want) {
		t.Errorf("init script does not insert the modules in order:\n%s", got)
	}
	if i, j := strings.Index(got, "insmod"), strings.Index(got, "-t 9p"); i > j {
		t.Error("init script mounts 9p before inserting modules")
	}
}

func TestInitScriptBindsModulesUnpackedElsewhere(t *testing.T) {
	if got := initScript(nil, "/lib/modules/6.1.0-57-amd64/"); strings.Contains(got, "/host/lib/modules") {
		t.Errorf("installed kernel: init script mounts over /lib/modules:\n%s", got)
	}
	got := initScript(nil, "/var/cache/k/lib/modules/5.10.0-46-amd64")
	want := "mount -t tmpfs tmpfs /host/lib/modules || fail 'mount tmpfs on /lib/modules failed'\n" +
		"mkdir /host/lib/modules/'5.10.0-46-amd64'\n" +
		"mount -o bind '/host/var/cache/k/lib/modules/5.10.0-46-amd64' /host/lib/modules/'5.10.0-46-amd64' || fail 'bind the kernel modules on /lib/modules failed'\n"
	if !strings.Contains(got, want) {
		t.Errorf("init script does not bind the modules:\n%s\nwant:\n%s", got, want)
	}
	if i, j := strings.Index(got, "tmpfs /host/run"), strings.Index(got, "tmpfs /host/lib/modules"); i > j {
		t.Error("modules bound before the chroot's other mounts")
	}
}

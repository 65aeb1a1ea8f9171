package vmtest

import (
	"os"
	"testing"
)

// TestCrashWatch reads real consoles of dead 6.1 guests: one crashed on
// purpose through /proc/sysrq-trigger, and the last lines of one that died
// in CI (all that CI's log kept of it). The console comes in pieces that cut
// lines, as a pipe delivers it.
func TestCrashWatch(t *testing.T) {
	for _, tc := range []struct{ file, want string }{
		{"testdata/sysrq-crash-6.1.console",
			"the kernel said Kernel panic - not syncing: sysrq triggered crash, in sh, " +
				"called from sysrq_handle_crash+0x16 < __handle_sysrq.cold+0x44 < write_sysrq_trigger+0x24 < proc_reg_write+0x56 < " +
				"vfs_write+0xc7 < ksys_write+0x6b < do_syscall_64+0x5d < entry_SYSCALL_64_after_hwframe+0x6e; " +
				"the last test started was TestFixture/sub"},
		{"testdata/ci-panic-tail-6.1.console", "the kernel said Kernel panic - not syncing: Fatal exception in interrupt"},
	} {
		console, err := os.ReadFile(tc.file)
		if err != nil {
			t.Fatal(err)
		}
		for _, piece := range []int{1, 7, 4096} {
			var c crashWatch
			for p := console; len(p) > 0; {
				n := min(piece, len(p))
				c.Write(p[:n])
				p = p[n:]
			}
			if got := c.String(); got != tc.want {
				t.Errorf("%s in pieces of %d:\n got %q\nwant %q", tc.file, piece, got, tc.want)
			}
		}
	}
}

func TestCrashWatchQuiet(t *testing.T) {
	var c crashWatch
	c.Write([]byte("[    1.0] virtio_net: loaded\nok  \tpkg\t1.2s\n"))
	if got := c.String(); got != "" {
		t.Errorf("a console without a test or an oops: %q", got)
	}
	c.Write([]byte("=== RUN   TestA\n--- PASS: TestA (0.00s)\n=== RUN   TestB\n"))
	if got, want := c.String(), "the last test started was TestB"; got != want {
		t.Errorf("got %q, want %q", got, want)
	}
}

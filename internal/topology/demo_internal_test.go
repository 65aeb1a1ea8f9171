package topology

import (
	"net/netip"
	"testing"
)

func TestDemoNetnsPid(t *testing.T) {
	for name, want := range map[string]int{
		"tpdemo0-1234": 1234, "tpdemo0-1234-fw": 1234, "tpdemo0-1234-r": 1234, "tpdemo0-1234-far": 1234,
		"tpdemo0-1234-node": 1234, "tpdemo0-1234-pod": 1234, "tpdemo0-1234-x": 0, "tpdemo0-01234": 0, "tpdemo0-": 0, "tpdemo0-fw": 0, "tpdemo1-1234": 0, "other": 0,
	} {
		pid, ok := demoNetnsPid("tpdemo0", name)
		if pid != want || ok != (want != 0) {
			t.Errorf("demoNetnsPid(%q) = %d, %v; want %d", name, pid, ok, want)
		}
	}
}

func TestNextNetwork(t *testing.T) {
	for in, want := range map[string]string{
		"172.31.250.0/24": "172.31.251.0/24", "172.31.255.0/24": "172.32.0.0/24",
		"fd00:7470::/64": "fd00:7470:0:1::/64", "10.0.0.128/25": "10.0.1.0/25",
	} {
		got, err := nextNetwork(netip.MustParsePrefix(in))
		if err != nil || got.String() != want {
			t.Errorf("nextNetwork(%s) = %v, %v; want %s", in, got, err, want)
		}
	}
	if _, err := nextNetwork(netip.MustParsePrefix("255.255.255.0/24")); err == nil {
		t.Error("nextNetwork of the last /24: no error")
	}
}

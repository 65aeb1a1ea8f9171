package main

import (
	"os/exec"
	"strings"
	"testing"

	"github.com/tracepkt/tracepkt-perf/internal/testenv"
)

// dockerRules is the ruleset Docker (27, iptables backend) writes in the
// machine's namespace for its default bridge, in iptables-restore form:
// FORWARD's policy DROP, the DOCKER-USER and isolation chains, DNAT to
// published ports through nat DOCKER, masquerade of the bridge's network.
const dockerRules = `*nat
:PREROUTING ACCEPT [0:0]
:INPUT ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
:POSTROUTING ACCEPT [0:0]
:DOCKER - [0:0]
-A PREROUTING -m addrtype --dst-type LOCAL -j DOCKER
-A OUTPUT ! -d 127.0.0.0/8 -m addrtype --dst-type LOCAL -j DOCKER
-A POSTROUTING -s 172.17.0.0/16 ! -o docker0 -j MASQUERADE
-A DOCKER -i docker0 -j RETURN
COMMIT
*filter
:INPUT ACCEPT [0:0]
:FORWARD DROP [0:0]
:OUTPUT ACCEPT [0:0]
:DOCKER - [0:0]
:DOCKER-ISOLATION-STAGE-1 - [0:0]
:DOCKER-ISOLATION-STAGE-2 - [0:0]
:DOCKER-USER - [0:0]
-A FORWARD -j DOCKER-USER
-A FORWARD -j DOCKER-ISOLATION-STAGE-1
-A FORWARD -o docker0 -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT
-A FORWARD -o docker0 -j DOCKER
-A FORWARD -i docker0 ! -o docker0 -j ACCEPT
-A FORWARD -i docker0 -o docker0 -j ACCEPT
-A DOCKER-ISOLATION-STAGE-1 -i docker0 ! -o docker0 -j DOCKER-ISOLATION-STAGE-2
-A DOCKER-ISOLATION-STAGE-1 -j RETURN
-A DOCKER-ISOLATION-STAGE-2 -o docker0 -j DROP
-A DOCKER-ISOLATION-STAGE-2 -j RETURN
-A DOCKER-USER -j RETURN
COMMIT
`

// hostFirewall gives the machine's own namespace a Docker-shaped firewall
// for the rest of t, unless it has an iptables firewall already (then that
// one is what the cases run under). The tables it made are deleted after,
// and the ruleset must then be what it was.
func hostFirewall(t *testing.T) {
	t.Helper()
	testenv.RequireRoot(t)
	testenv.RequireCommands(t, "nft", "iptables-restore", "ip6tables-restore")
	nft := func(args ...string) (string, error) {
		out, err := exec.Command("nft", args...).CombinedOutput()
		return string(out), err
	}
	before, err := nft("list", "ruleset")
	if err != nil {
		t.Fatalf("nft list ruleset: %v\n%s", err, before)
	}
	tables := []string{"ip filter", "ip nat", "ip6 filter", "ip6 nat"}
	for _, table := range tables {
		if strings.Contains(before, "table "+table+" {") {
			t.Logf("the machine has table %s already: the cases run under its own firewall", table)
			return
		}
	}
	t.Cleanup(func() {
		for _, table := range tables {
			if out, err := nft(append([]string{"delete", "table"}, strings.Fields(table)...)...); err != nil {
				t.Errorf("nft delete table %s: %v\n%s", table, err, out)
			}
		}
		if after, err := nft("list", "ruleset"); err != nil || after != before {
			t.Errorf("ruleset after the test (%v):\n%s\nwant, as before:\n%s", err, after, before)
		}
	})
	for _, restore := range []string{"iptables-restore", "ip6tables-restore"} {
		rules := dockerRules
		if restore == "ip6tables-restore" {
			rules = strings.ReplaceAll(strings.ReplaceAll(rules, "172.17.0.0/16", "fd00:d0c::/64"), "127.0.0.0/8", "::1/128")
		}
		cmd := exec.Command(restore, "--noflush")
		cmd.Stdin = strings.NewReader(rules)
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("%s: %v\n%s", restore, err, out)
		}
	}
}

// TestE2EUnderHostFirewall runs the core end-to-end cases again with a
// firewall in the machine's own namespace, as any machine with Docker or a
// distribution's firewall has: the echoes cross its chains (filter OUTPUT,
// nat OUTPUT and POSTROUTING) and the expected rows must allow them.
func TestE2EUnderHostFirewall(t *testing.T) {
	hostFirewall(t)
	for _, c := range []struct {
		name string
		test func(*testing.T)
	}{
		{"VethPair", TestE2EVethPair},
		{"DockerBridge", TestE2EDockerBridge},
		{"Router", TestE2ERouter},
		{"InterruptedDrop", TestE2EInterruptedDrop},
		{"NetfilterLookupFails", TestE2ENetfilterLookupFails},
		{"NetfilterRowNamesItsInterface", TestE2ENetfilterRowNamesItsInterface},
		{"Demo", TestE2EDemo},
	} {
		t.Run(c.name, c.test)
	}
}

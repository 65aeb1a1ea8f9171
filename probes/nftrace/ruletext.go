package nftrace

import (
	"bytes"
	"context"
	"fmt"
	"os/exec"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// nftTimeout bounds one run of nft.
const nftTimeout = 10 * time.Second

// ruleKey names a rule: handles are unique within a table.
type ruleKey struct {
	Family uint8
	Table  string
	Handle uint64
}

// familyCodes maps nft's family names to NFPROTO_* values.
var familyCodes = map[string]uint8{
	"ip": unix.NFPROTO_IPV4, "ip6": unix.NFPROTO_IPV6, "inet": unix.NFPROTO_INET,
	"arp": unix.NFPROTO_ARP, "bridge": unix.NFPROTO_BRIDGE, "netdev": unix.NFPROTO_NETDEV,
}

// listRuleset runs `nft --handle --stateless list ruleset` in the calling thread's network
// namespace (the child inherits the thread's namespace) and returns its output. The whole
// ruleset is listed, not chain by chain: nft 1.0.6 cannot name a chain that is also a
// keyword (such as fwd) on its command line, even quoted. That nft also loses track of
// iptables-nft's targets across families in one listing ("XT target DNAT not found" for an
// ip6 nat rule after an ip one, while each family alone lists right): then each family of
// the listing is listed again on its own, and the listings are joined.
func listRuleset(nft string) ([]byte, error) {
	out, warnings, err := runNft(nft, "list", "ruleset")
	if err != nil || !bytes.Contains(warnings, []byte(" not found")) {
		return out, err
	}
	var joined []byte
	for family := range familyCodes {
		if !bytes.Contains(out, []byte("table "+family+" ")) {
			continue
		}
		one, _, err := runNft(nft, "list", "ruleset", family)
		if err != nil {
			return nil, err
		}
		joined = append(joined, one...)
	}
	return joined, nil
}

// runNft runs nft with args after --handle --stateless and returns its output and what it
// said on stderr.
func runNft(nft string, args ...string) (out, warnings []byte, err error) {
	ctx, cancel := context.WithTimeout(context.Background(), nftTimeout)
	defer cancel()
	var stderr bytes.Buffer
	cmd := exec.CommandContext(ctx, nft, append([]string{"--handle", "--stateless"}, args...)...)
	cmd.Stderr = &stderr
	if out, err = cmd.Output(); err != nil {
		return nil, nil, fmt.Errorf("%s: %w: %s", strings.Join(cmd.Args, " "), err, bytes.TrimSpace(stderr.Bytes()))
	}
	return out, stderr.Bytes(), nil
}

// parseRuleset maps each rule of an `nft --handle --stateless list ruleset` listing to its
// text, without the handle comment. A rule nft wraps over several lines (long anonymous
// sets) is joined with single spaces.
func parseRuleset(listing []byte) map[ruleKey]string {
	rules := make(map[ruleKey]string)
	var (
		family  uint8
		table   string
		inChain bool
		pending []string // lines of a rule that continues on the next line
	)
	for _, raw := range strings.Split(string(listing), "\n") {
		line := strings.TrimSpace(raw)
		body, handle, hasHandle := cutHandle(line)
		// Table and chain lines end in a comment: "# handle 1", "# handle 2 progname nft".
		header, _, _ := strings.Cut(line, "#")
		fields := strings.Fields(header)
		switch {
		case len(pending) == 0 && len(fields) >= 3 && fields[0] == "table" && fields[len(fields)-1] == "{":
			family, table, inChain = familyCodes[fields[1]], unquote(fields[2]), false
			continue
		case len(pending) == 0 && len(fields) >= 2 && fields[0] == "chain" && fields[len(fields)-1] == "{":
			inChain = true
			continue
		case len(pending) == 0 && line == "}":
			inChain = false
			continue
		case !inChain || table == "":
			continue
		}
		if !hasHandle {
			// A rule line without its handle yet is a rule wrapped by nft: it leaves a
			// brace open. Other lines (type ... hook ...; policy ...; comment) do not.
			if len(pending) > 0 || strings.Count(body, "{") > strings.Count(body, "}") {
				pending = append(pending, body)
			}
			continue
		}
		text := strings.Join(append(pending, body), " ")
		pending = pending[:0]
		rules[ruleKey{family, table, handle}] = text
	}
	return rules
}

// cutHandle splits "<text> # handle <n>" into text and n.
func cutHandle(line string) (string, uint64, bool) {
	i := strings.LastIndex(line, "# handle ")
	if i < 0 {
		return line, 0, false
	}
	n, err := strconv.ParseUint(strings.TrimSpace(line[i+len("# handle "):]), 10, 64)
	if err != nil {
		return line, 0, false
	}
	return strings.TrimSpace(line[:i]), n, true
}

func unquote(s string) string {
	if len(s) >= 2 && s[0] == '"' && s[len(s)-1] == '"' {
		return s[1 : len(s)-1]
	}
	return s
}

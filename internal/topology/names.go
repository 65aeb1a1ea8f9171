package topology

import (
	"encoding/binary"
	"fmt"
	"math/rand/v2"
	"net"
	"net/netip"
	"sync"

	"github.com/vishvananda/netlink"
)

// UniqueName returns prefix followed by 6 random hex digits. Interface names are limited to
// 15 bytes, so keep prefix short enough for the suffixes presets add (VethPair adds "h").
func UniqueName(prefix string) string {
	return fmt.Sprintf("%s%06x", prefix, rand.Uint32()&0xffffff)
}

var (
	testNetsMu   sync.Mutex
	testNetsUsed = map[netip.Prefix]bool{}
)

// TestNets returns a random IPv4 /24 inside 198.18.0.0/15 (RFC 2544 benchmarking) and a
// random IPv6 /64 inside fd00:7470::/32 other than the demo's fd00:7470::/64. It avoids
// networks already handed out by this process and networks that overlap an address or
// route of the caller's namespace.
func TestNets() (v4, v6 netip.Prefix) {
	var inUse []netip.Prefix
	if routes, err := netlink.RouteList(nil, netlink.FAMILY_ALL); err == nil {
		for _, r := range routes {
			if r.Dst != nil {
				if p, ok := prefixOf(r.Dst.IP, r.Dst.Mask); ok && p.Bits() > 0 {
					inUse = append(inUse, p)
				}
			}
		}
	}
	if addrs, err := netlink.AddrList(nil, netlink.FAMILY_ALL); err == nil {
		for _, a := range addrs {
			if p, ok := prefixOf(a.IP, a.Mask); ok {
				inUse = append(inUse, p)
			}
		}
	}
	free := func(p netip.Prefix) bool {
		if testNetsUsed[p] {
			return false
		}
		for _, u := range inUse {
			if u.Overlaps(p) {
				return false
			}
		}
		return true
	}

	testNetsMu.Lock()
	defer testNetsMu.Unlock()
	for i := 0; i < 64; i++ {
		n := rand.N(512) // /24s in a /15
		v4 = netip.PrefixFrom(netip.AddrFrom4([4]byte{198, 18 + byte(n>>8), byte(n), 0}), 24)
		if free(v4) {
			break
		}
	}
	for i := 0; i < 64; i++ {
		var b [16]byte
		b[0], b[1], b[2], b[3] = 0xfd, 0x00, 0x74, 0x70
		binary.BigEndian.PutUint32(b[4:8], rand.Uint32N(1<<32-1)+1) // never 0: the demo's
		v6 = netip.PrefixFrom(netip.AddrFrom16(b), 64)
		if free(v6) {
			break
		}
	}
	testNetsUsed[v4], testNetsUsed[v6] = true, true
	return v4, v6
}

func prefixOf(ip net.IP, mask net.IPMask) (netip.Prefix, bool) {
	a, ok := netip.AddrFromSlice(ip)
	if !ok {
		return netip.Prefix{}, false
	}
	ones, bits := mask.Size()
	if bits == 0 {
		return netip.Prefix{}, false
	}
	a = a.Unmap()
	if bits == 128 && a.Is4() {
		ones -= 96
	}
	p, err := a.Prefix(ones)
	return p, err == nil
}

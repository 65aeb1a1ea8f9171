package probes

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"

	"github.com/cilium/ebpf/btf"

	"github.com/tracepkt/tracepkt-perf/decode"
)

// Offsets are the byte offsets of the kernel struct members the BPF programs
// read. They differ between kernel builds, so they come from the running
// kernel's BTF at load time.
type Offsets struct {
	SkbHead          uint32 // sk_buff.head (unsigned char *)
	SkbData          uint32 // sk_buff.data (unsigned char *)
	SkbNetworkHeader uint32 // sk_buff.network_header (__u16)
	SkbLen           uint32 // sk_buff.len (unsigned int)
	SkbDataLen       uint32 // sk_buff.data_len (unsigned int)
	SkbDev           uint32 // sk_buff.dev (struct net_device *)
	DevName          uint32 // net_device.name (char[16])
	DevIfindex       uint32 // net_device.ifindex (int)
	DevNet           uint32 // net_device.nd_net.net (struct net *)
	NetInum          uint32 // net.ns.inum (unsigned int)
	SkbSk            uint32 // sk_buff.sk (struct sock *)
	SockNet          uint32 // sock.__sk_common.skc_net.net (struct net *)
}

// ErrNoBTF is returned when the running kernel exposes no BTF.
var ErrNoBTF = errors.New("kernel BTF not available (is CONFIG_DEBUG_INFO_BTF set? /sys/kernel/btf/vmlinux)")

// kernelSpec is the running kernel's BTF as cilium/ebpf parses it, for the
// netfilter kprobes' argument and member lookups: parsed once per process
// from the blob the device types were read from, not read again.
var kernelSpec = sync.OnceValues(func() (*btf.Spec, error) {
	raw, err := vmlinuxBTF()
	if err != nil {
		return nil, err
	}
	return btf.LoadSpecFromReader(bytes.NewReader(raw))
})

// KernelBTF returns the running kernel's BTF, parsed on first use.
func KernelBTF() (*btf.Spec, error) {
	spec, err := kernelSpec()
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrNoBTF, err)
	}
	return spec, nil
}

// moduleSpecs are the modules' BTF read so far, by module name.
var moduleSpecs struct {
	sync.Mutex
	byName map[string]*btf.Spec
}

// moduleBTF returns the BTF of module mod (/sys/kernel/btf/<mod>), split
// from the kernel's, parsed on first use.
func moduleBTF(mod string) (*btf.Spec, error) {
	base, err := KernelBTF()
	if err != nil {
		return nil, err
	}
	moduleSpecs.Lock()
	defer moduleSpecs.Unlock()
	if spec, ok := moduleSpecs.byName[mod]; ok {
		return spec, nil
	}
	raw, err := os.ReadFile(filepath.Join("/sys/kernel/btf", mod))
	if err != nil {
		return nil, err
	}
	spec, err := btf.LoadSplitSpecFromReader(bytes.NewReader(raw), base)
	if err != nil {
		return nil, err
	}
	if moduleSpecs.byName == nil {
		moduleSpecs.byName = map[string]*btf.Spec{}
	}
	moduleSpecs.byName[mod] = spec
	return spec, nil
}

// offsetField is a member the programs read: its struct, its dotted path,
// its size, and where it goes in Offsets.
type offsetField struct {
	strct, path string
	size        uint32
	dst         func(*Offsets) *uint32
}

var offsetFields = []offsetField{
	{"sk_buff", "head", 8, func(o *Offsets) *uint32 { return &o.SkbHead }},
	{"sk_buff", "data", 8, func(o *Offsets) *uint32 { return &o.SkbData }},
	{"sk_buff", "network_header", 2, func(o *Offsets) *uint32 { return &o.SkbNetworkHeader }},
	{"sk_buff", "len", 4, func(o *Offsets) *uint32 { return &o.SkbLen }},
	{"sk_buff", "data_len", 4, func(o *Offsets) *uint32 { return &o.SkbDataLen }},
	{"sk_buff", "dev", 8, func(o *Offsets) *uint32 { return &o.SkbDev }},
	{"net_device", "name", 16, func(o *Offsets) *uint32 { return &o.DevName }},
	{"net_device", "ifindex", 4, func(o *Offsets) *uint32 { return &o.DevIfindex }},
	{"net_device", "nd_net.net", 8, func(o *Offsets) *uint32 { return &o.DevNet }},
	{"net", "ns.inum", 4, func(o *Offsets) *uint32 { return &o.NetInum }},
	{"sk_buff", "sk", 8, func(o *Offsets) *uint32 { return &o.SkbSk }},
	{"sock", "__sk_common.skc_net.net", 8, func(o *Offsets) *uint32 { return &o.SockNet }},
}

// deviceTypeNames are the names of the structs and typedefs the device
// programs need, and of the struct members they read.
func deviceTypeNames() (names, members []string) {
	for _, f := range offsetFields {
		names = append(names, f.strct)
		members = append(members, strings.Split(f.path, ".")...)
	}
	for _, p := range decode.Probes() {
		_, event := p.Tracepoint()
		names = append(names, tracepointTypedef(event))
	}
	for _, p := range netfilterProbes {
		names = append(names, p.Kprobe())
	}
	return names, members
}

// KernelOffsets are the offsets of the running kernel: cached, or looked
// up in its BTF.
func KernelOffsets() (Offsets, error) {
	facts, err := deviceFacts()
	if err != nil {
		return Offsets{}, err
	}
	return facts.Offsets, nil
}

// LookupOffsets finds every member the programs read in spec, checking sizes.
func LookupOffsets(spec typeFinder) (Offsets, error) {
	var o Offsets
	for _, f := range offsetFields {
		var s *btf.Struct
		if err := spec.TypeByName(f.strct, &s); err != nil {
			return Offsets{}, fmt.Errorf("btf: struct %s: %w", f.strct, err)
		}
		off, size, err := memberOffset(s, f.path)
		if err != nil {
			return Offsets{}, fmt.Errorf("btf: %s.%s: %w", f.strct, f.path, err)
		}
		if size != f.size {
			return Offsets{}, fmt.Errorf("btf: %s.%s is %d bytes, want %d", f.strct, f.path, size, f.size)
		}
		*f.dst(&o) = off
	}
	return o, nil
}

// memberOffset resolves a dotted member path in a struct or union, descending
// into anonymous members (sk_buff.dev sits inside unnamed unions and structs),
// and returns its byte offset and size.
func memberOffset(typ btf.Type, path string) (offset, size uint32, err error) {
	for _, name := range strings.Split(path, ".") {
		off, member, ok := findMember(typ, name)
		if !ok {
			return 0, 0, fmt.Errorf("no member %q", name)
		}
		if member.BitfieldSize != 0 || (off+member.Offset)%8 != 0 {
			return 0, 0, fmt.Errorf("member %q is a bitfield", name)
		}
		offset += uint32((off + member.Offset) / 8)
		typ = member.Type
	}
	sz, err := btf.Sizeof(typ)
	if err != nil {
		return 0, 0, err
	}
	return offset, uint32(sz), nil
}

// findMember looks name up among typ's members, depth first through unnamed
// members; the returned Bits are the offset of the unnamed container(s).
func findMember(typ btf.Type, name string) (btf.Bits, btf.Member, bool) {
	var members []btf.Member
	switch t := btf.UnderlyingType(typ).(type) {
	case *btf.Struct:
		members = t.Members
	case *btf.Union:
		members = t.Members
	default:
		return 0, btf.Member{}, false
	}
	for _, m := range members {
		if m.Name == name {
			return 0, m, true
		}
		if m.Name == "" {
			if off, inner, ok := findMember(m.Type, name); ok {
				return m.Offset + off, inner, true
			}
		}
	}
	return 0, btf.Member{}, false
}

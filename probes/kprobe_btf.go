package probes

import (
	"errors"
	"fmt"
	"runtime"

	"github.com/cilium/ebpf/btf"

	"github.com/tracepkt/tracepkt-perf/decode"
)

// ErrUnsupportedArch is returned where the netfilter kprobes do not know
// the calling convention.
var ErrUnsupportedArch = errors.New("netfilter kprobes support amd64 only")

// amd64ArgRegs are the pt_regs members holding the first arguments.
var amd64ArgRegs = []string{"di", "si", "dx", "cx", "r8", "r9"}

// netfilterProbes are the netfilter functions a kprobe can be placed on.
var netfilterProbes = []decode.Probe{decode.ProbeIptDoTable, decode.ProbeIp6tDoTable, decode.ProbeNftDoChain}

// netfilterModule is the module whose BTF describes a netfilter probe's
// function, when it is not built in.
var netfilterModule = map[decode.Probe]string{
	decode.ProbeIptDoTable:  "ip_tables",
	decode.ProbeIp6tDoTable: "ip6_tables",
	decode.ProbeNftDoChain:  "nf_tables",
}

// KernelNetfilterOffsets looks the offsets of probe p up in the BTF of the
// running kernel and of the module holding its function (loaded by then:
// the kprobe needs it too); see KernelNetfilterArgs for a module without BTF.
func KernelNetfilterOffsets(p decode.Probe) (NetfilterOffsets, error) {
	if runtime.GOARCH != "amd64" {
		return NetfilterOffsets{}, ErrUnsupportedArch
	}
	f, err := kernelNetfilterFacts(p)
	return f.Offsets, err
}

// LookupNetfilterOffsets reads probe p's offsets from base (vmlinux) and
// spec (the BTF holding its function: base itself, or a module's).
func LookupNetfilterOffsets(base, spec *btf.Spec, p decode.Probe) (NetfilterOffsets, error) {
	proto, err := funcProto(spec, p.Kprobe())
	if err != nil {
		return NetfilterOffsets{}, err
	}
	return lookupNetfilterOffsets(base, spec, proto, p)
}

// lookupNetfilterOffsets reads probe p's offsets with proto as its
// function's prototype.
func lookupNetfilterOffsets(base, spec *btf.Spec, proto *btf.FuncProto, p decode.Probe) (NetfilterOffsets, error) {
	var o NetfilterOffsets
	if err := o.lookupArgs(base, proto, p); err != nil {
		return o, err
	}
	if err := o.lookupMembers(base, spec, p); err != nil {
		return o, err
	}
	if p == decode.ProbeNftDoChain {
		if err := o.lookupTableFamily(spec); err != nil {
			return o, err
		}
	}
	return o, nil
}

// funcProto returns the prototype of function fn in spec.
func funcProto(spec *btf.Spec, fn string) (*btf.FuncProto, error) {
	var f *btf.Func
	if err := spec.TypeByName(fn, &f); err != nil {
		return nil, fmt.Errorf("btf: function %s: %w", fn, err)
	}
	proto, ok := f.Type.(*btf.FuncProto)
	if !ok {
		return nil, fmt.Errorf("btf: %s has no prototype", fn)
	}
	return proto, nil
}

// lookupArgs finds the pt_regs slots of the return value and of the
// arguments of p's function (prototype proto), by their types: the order of
// ipt_do_table's changed in 5.16.
func (o *NetfilterOffsets) lookupArgs(base *btf.Spec, proto *btf.FuncProto, p decode.Probe) error {
	fn := p.Kprobe()
	var ptRegs *btf.Struct
	if err := base.TypeByName("pt_regs", &ptRegs); err != nil {
		return fmt.Errorf("btf: struct pt_regs: %w", err)
	}
	reg := func(name string) (int16, error) {
		off, _, err := memberOffset(ptRegs, name)
		return int16(off), err
	}
	var err error
	if o.RegRet, err = reg("ax"); err != nil {
		return fmt.Errorf("btf: pt_regs.ax: %w", err)
	}
	found := map[string]bool{}
	for i, param := range proto.Params {
		if i >= len(amd64ArgRegs) {
			break
		}
		r, err := reg(amd64ArgRegs[i])
		if err != nil {
			return fmt.Errorf("btf: pt_regs.%s: %w", amd64ArgRegs[i], err)
		}
		switch pointee(param.Type) {
		case "sk_buff":
			o.ArgSkb, found["skb"] = r, true
		case "nf_hook_state":
			o.ArgState, found["state"] = r, true
		case "nft_pktinfo":
			o.ArgPkt, found["pkt"] = r, true
		default: // void *priv, or struct xt_table * before 5.16
			o.ArgPriv, found["priv"] = r, true
		}
	}
	need := []string{"skb", "state", "priv"}
	if p == decode.ProbeNftDoChain {
		need = []string{"pkt", "priv"}
	}
	for _, n := range need {
		if !found[n] {
			return fmt.Errorf("btf: %s has no %s argument (%v)", fn, n, proto)
		}
	}
	return nil
}

// lookupMembers finds the members of the structs the arguments point to.
func (o *NetfilterOffsets) lookupMembers(base, spec *btf.Spec, p decode.Probe) error {
	type memberRef struct {
		spec        *btf.Spec
		strct, path string
		dst         *uint32
	}
	members := []memberRef{
		{base, "nf_hook_state", "hook", &o.StateHook},
		{base, "nf_hook_state", "pf", &o.StatePf},
		{base, "nf_hook_state", "in", &o.StateIn},
		{base, "nf_hook_state", "out", &o.StateOut},
		{base, "nf_hook_state", "net", &o.StateNet},
	}
	if p == decode.ProbeNftDoChain {
		members = append(members,
			memberRef{spec, "nft_pktinfo", "skb", &o.PktSkb},
			memberRef{spec, "nft_pktinfo", "state", &o.PktState},
			memberRef{spec, "nft_chain", "name", &o.ChainName},
			memberRef{spec, "nft_chain", "table", &o.ChainTable},
			memberRef{spec, "nft_table", "name", &o.TableName},
		)
	} else {
		members = append(members,
			memberRef{spec, "xt_table", "name", &o.XtTableName},
			memberRef{spec, "xt_table", "af", &o.XtTableAf},
		)
	}
	for _, m := range members {
		var s *btf.Struct
		if err := m.spec.TypeByName(m.strct, &s); err != nil {
			return fmt.Errorf("btf: struct %s: %w", m.strct, err)
		}
		off, _, err := memberOffset(s, m.path)
		if err != nil {
			return fmt.Errorf("btf: %s.%s: %w", m.strct, m.path, err)
		}
		*m.dst = off
	}
	return nil
}

// lookupTableFamily finds nft_table.family, a bitfield in a u16.
func (o *NetfilterOffsets) lookupTableFamily(spec *btf.Spec) error {
	var table *btf.Struct
	if err := spec.TypeByName("nft_table", &table); err != nil {
		return fmt.Errorf("btf: struct nft_table: %w", err)
	}
	for _, m := range table.Members {
		if m.Name != "family" {
			continue
		}
		bits := uint32(m.BitfieldSize)
		if bits == 0 {
			sz, err := btf.Sizeof(m.Type)
			if err != nil {
				return err
			}
			bits = uint32(sz) * 8
		}
		o.TableFamily = uint32(m.Offset) / 8
		o.TableFamilyShift = uint8(uint32(m.Offset) % 8)
		if uint32(o.TableFamilyShift)+bits > 16 {
			return fmt.Errorf("btf: nft_table.family spans more than 16 bits")
		}
		o.TableFamilyBits = uint8(bits)
	}
	if o.TableFamilyBits == 0 {
		return fmt.Errorf("btf: nft_table has no family")
	}
	return nil
}

// pointee names the struct a parameter points to, "" for void * and others.
func pointee(t btf.Type) string {
	ptr, ok := btf.UnderlyingType(t).(*btf.Pointer)
	if !ok {
		return ""
	}
	target := ptr.Target
	for {
		switch q := target.(type) {
		case *btf.Const:
			target = q.Type
			continue
		case *btf.Volatile:
			target = q.Type
			continue
		case *btf.Typedef:
			target = q.Type
			continue
		}
		break
	}
	if s, ok := target.(*btf.Struct); ok {
		return s.Name
	}
	return ""
}

package probes

import (
	"bytes"
	"encoding/binary"
	"testing"

	"github.com/cilium/ebpf/btf"
)

// syntheticSpec builds the structs the programs read with the awkward parts
// of real kernels: members inside anonymous unions and structs, a typedef'd
// struct member (possible_net_t) and members at odd offsets.
func syntheticSpec(t *testing.T) *btf.Spec {
	t.Helper()
	return buildSpec(t, syntheticTypes()...)
}

// syntheticTypes are the structs of syntheticSpec.
func syntheticTypes() []btf.Type {
	u8 := &btf.Int{Name: "unsigned char", Size: 1}
	u16 := &btf.Int{Name: "__u16", Size: 2}
	u32 := &btf.Int{Name: "unsigned int", Size: 4}
	i32 := &btf.Int{Name: "int", Size: 4, Encoding: btf.Signed}
	u64 := &btf.Int{Name: "long unsigned int", Size: 8}
	ptr := func(t btf.Type) btf.Type { return &btf.Pointer{Target: t} }
	bits := func(bytes uint32) btf.Bits { return btf.Bits(bytes * 8) }

	nsCommon := &btf.Struct{Name: "ns_common", Size: 32, Members: []btf.Member{
		{Name: "stashed", Type: u64, Offset: 0},
		{Name: "inum", Type: u32, Offset: bits(24)},
	}}
	net := &btf.Struct{Name: "net", Size: 256, Members: []btf.Member{
		{Name: "passive", Type: u32, Offset: 0},
		{Name: "ns", Type: nsCommon, Offset: bits(152)},
	}}
	possibleNet := &btf.Typedef{Name: "possible_net_t", Type: &btf.Struct{Size: 8, Members: []btf.Member{
		{Name: "net", Type: ptr(net), Offset: 0},
	}}}
	// struct sock's namespace sits in its first member, struct sock_common.
	sock := &btf.Struct{Name: "sock", Size: 768, Members: []btf.Member{
		{Name: "__sk_common", Type: &btf.Struct{Name: "sock_common", Size: 136, Members: []btf.Member{
			{Name: "skc_daddr", Type: u32, Offset: 0},
			{Name: "skc_net", Type: possibleNet, Offset: bits(48)},
		}}, Offset: 0},
	}}
	dev := &btf.Struct{Name: "net_device", Size: 512, Members: []btf.Member{
		{Name: "name", Type: &btf.Array{Type: u8, Index: u32, Nelems: 16}, Offset: bits(280)},
		{Name: "ifindex", Type: i32, Offset: bits(224)},
		{Name: "nd_net", Type: possibleNet, Offset: bits(264)},
	}}
	skb := &btf.Struct{Name: "sk_buff", Size: 232, Members: []btf.Member{
		{Name: "", Type: &btf.Union{Size: 24, Members: []btf.Member{
			{Name: "", Type: &btf.Struct{Size: 24, Members: []btf.Member{
				{Name: "next", Type: ptr(u8), Offset: 0},
				{Name: "prev", Type: ptr(u8), Offset: bits(8)},
				{Name: "", Type: &btf.Union{Size: 8, Members: []btf.Member{
					{Name: "dev", Type: ptr(dev), Offset: 0},
					{Name: "dev_scratch", Type: u64, Offset: 0},
				}}, Offset: bits(16)},
			}}, Offset: 0},
		}}, Offset: 0},
		{Name: "len", Type: u32, Offset: bits(112)},
		{Name: "data_len", Type: u32, Offset: bits(116)},
		{Name: "", Type: &btf.Struct{Size: 8, Members: []btf.Member{
			{Name: "transport_header", Type: u16, Offset: 0},
			{Name: "network_header", Type: u16, Offset: bits(2)},
		}}, Offset: bits(178)},
		{Name: "", Type: &btf.Union{Size: 8, Members: []btf.Member{
			{Name: "sk", Type: ptr(sock), Offset: 0},
			{Name: "ip_defrag_offset", Type: i32, Offset: 0},
		}}, Offset: bits(24)},
		{Name: "head", Type: ptr(u8), Offset: bits(192)},
		{Name: "data", Type: ptr(u8), Offset: bits(200)},
	}}

	return []btf.Type{skb, dev, net, sock}
}

// buildSpec marshals types into BTF and loads it back, as the kernel's would be.
func buildSpec(t *testing.T, types ...btf.Type) *btf.Spec {
	t.Helper()
	spec, err := btf.LoadSpecFromReader(bytes.NewReader(buildBTF(t, types...)))
	if err != nil {
		t.Fatal(err)
	}
	return spec
}

// buildBTF marshals types into a BTF blob, as the kernel's would be.
func buildBTF(t *testing.T, types ...btf.Type) []byte {
	t.Helper()
	b, err := btf.NewBuilder(types, nil)
	if err != nil {
		t.Fatal(err)
	}
	raw, err := b.Marshal(nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	return raw
}

// finders reads blob both ways the programs' types are looked up in: as a
// btf.Spec (cilium/ebpf) and as kernelTypes, looking for names and members.
func finders(t *testing.T, blob []byte, names, members []string) map[string]typeFinder {
	t.Helper()
	spec, err := btf.LoadSpecFromReader(bytes.NewReader(blob))
	if err != nil {
		t.Fatal(err)
	}
	kt, err := parseKernelTypes(blob, names, members)
	if err != nil {
		t.Fatal(err)
	}
	return map[string]typeFinder{"btf.Spec": spec, "kernelTypes": kt}
}

func TestLookupOffsets(t *testing.T) {
	names, members := deviceTypeNames()
	for name, spec := range finders(t, buildBTF(t, syntheticTypes()...), names, members) {
		got, err := LookupOffsets(spec)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		want := Offsets{
			SkbHead: 192, SkbData: 200, SkbNetworkHeader: 180, SkbLen: 112, SkbDataLen: 116, SkbDev: 16,
			DevName: 280, DevIfindex: 224, DevNet: 264, NetInum: 176, SkbSk: 24, SockNet: 48,
		}
		if got != want {
			t.Errorf("%s: offsets\n got %+v\nwant %+v", name, got, want)
		}
	}
}

func TestMemberOffsetErrors(t *testing.T) {
	spec := syntheticSpec(t)
	var skb *btf.Struct
	if err := spec.TypeByName("sk_buff", &skb); err != nil {
		t.Fatal(err)
	}
	for _, path := range []string{"nope", "dev.nope", "len.x"} {
		if _, _, err := memberOffset(skb, path); err == nil {
			t.Errorf("memberOffset(sk_buff, %q) succeeded", path)
		}
	}
}

func TestParseCPUList(t *testing.T) {
	got, err := parseCPUList("0-2,5,7-8\n")
	if err != nil {
		t.Fatal(err)
	}
	want := []int{0, 1, 2, 5, 7, 8}
	if len(got) != len(want) {
		t.Fatalf("got %v, want %v", got, want)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("got %v, want %v", got, want)
		}
	}
	for _, bad := range []string{"", "a", "3-1", "1-x"} {
		if _, err := parseCPUList(bad); err == nil {
			t.Errorf("parseCPUList(%q) succeeded", bad)
		}
	}
}

// A blob that is not BTF, or ends inside a type, is refused, not read past.
func TestParseKernelTypesRefusesBadBlobs(t *testing.T) {
	blob := buildBTF(t, syntheticTypes()...)
	names, members := deviceTypeNames()
	truncated := bytes.Clone(blob)
	// Claim more type data than there is.
	binary.NativeEndian.PutUint32(truncated[12:], binary.NativeEndian.Uint32(truncated[12:])+1<<20)
	cut := bytes.Clone(blob)
	// Types end one byte short of their last member.
	binary.NativeEndian.PutUint32(cut[12:], binary.NativeEndian.Uint32(cut[12:])-1)
	for name, b := range map[string][]byte{"empty": nil, "not BTF": []byte("not a BTF blob at all, no"), "truncated": truncated, "cut": cut} {
		if _, err := parseKernelTypes(b, names, members); err == nil {
			t.Errorf("%s: no error", name)
		}
	}
}

// A loop of types, which the kernel never makes, ends in an error.
func TestKernelTypesLoop(t *testing.T) {
	loop := &btf.Typedef{Name: "loop"}
	loop.Type = &btf.Const{Type: loop}
	kt, err := parseKernelTypes(buildBTF(t, loop), []string{"loop"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	var td *btf.Typedef
	if err := kt.TypeByName("loop", &td); err == nil {
		t.Error("no error")
	}
}

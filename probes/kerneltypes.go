package probes

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"sync"

	"github.com/cilium/ebpf/btf"
	"golang.org/x/sys/unix"
)

// typeFinder finds a named type: a *btf.Spec, or the kernelTypes the device
// programs are built from.
type typeFinder interface {
	TypeByName(name string, typ any) error
}

// kernelTypes are the few types of a BTF blob that the device programs need:
// the structs they read and the raw tracepoints' btf_trace_<event> typedefs.
// One pass over the blob finds them, and they are decoded on demand, each
// struct with only the members looked for and its unnamed ones, each pointer
// to a struct with the struct's name and size only. Decoding the whole graph
// of types sk_buff reaches (cilium/ebpf's btf.Spec) took most of the time to
// the first packet.
type kernelTypes struct {
	types, strs []byte
	offsets     []uint32                // type ID - 1 -> offset in types (ID 0 is void)
	named       map[string][]btf.TypeID // the names looked for -> IDs of structs and typedefs so named
	members     map[string]bool         // the member names looked for
	mu          sync.Mutex              // guards decoded
	decoded     map[btf.TypeID]btf.Type
}

// BTF kinds, from <linux/btf.h>.
const (
	kindInt       = 1
	kindPtr       = 2
	kindArray     = 3
	kindStruct    = 4
	kindUnion     = 5
	kindEnum      = 6
	kindFwd       = 7
	kindTypedef   = 8
	kindVolatile  = 9
	kindConst     = 10
	kindRestrict  = 11
	kindFunc      = 12
	kindFuncProto = 13
	kindVar       = 14
	kindDatasec   = 15
	kindFloat     = 16
	kindDeclTag   = 17
	kindTypeTag   = 18
	kindEnum64    = 19
)

// btfHeaderLen is the size of struct btf_header in <linux/btf.h>; btfTypeLen
// of struct btf_type.
const (
	btfHeaderLen = 24
	btfTypeLen   = 12
)

// loadKernelTypes reads the running kernel's BTF for the structs,
// typedefs and functions names, and the struct members memberNames.
func loadKernelTypes(names, memberNames []string) (*kernelTypes, error) {
	raw, err := vmlinuxBTF()
	if err != nil {
		return nil, err
	}
	return parseKernelTypes(raw, names, memberNames)
}

// vmlinuxBTF is the running kernel's BTF blob, read once per process for
// the device types and cilium/ebpf's full parse (KernelBTF). Where the
// kernel cannot map it (before 6.16), each read returns 4 KB at most
// whatever the size asked for: over a thousand system calls for one pass.
var vmlinuxBTF = sync.OnceValues(func() ([]byte, error) {
	f, err := os.Open("/sys/kernel/btf/vmlinux")
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrNoBTF, err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrNoBTF, err)
	}
	// Mapped where the kernel allows it, else read. The pass over the types
	// touches most pages: populating the mapping at once saves a fault each.
	raw, err := unix.Mmap(int(f.Fd()), 0, int(st.Size()), unix.PROT_READ, unix.MAP_PRIVATE|unix.MAP_POPULATE)
	if err != nil {
		if raw, err = os.ReadFile(f.Name()); err != nil {
			return nil, fmt.Errorf("%w: %w", ErrNoBTF, err)
		}
	}
	return raw, nil
})

// parseKernelTypes finds names in the BTF blob raw (native byte order, as
// the kernel's is).
func parseKernelTypes(raw []byte, names, memberNames []string) (*kernelTypes, error) {
	le := binary.NativeEndian
	if len(raw) < btfHeaderLen || le.Uint16(raw) != 0xeb9f {
		return nil, errors.New("btf: not a BTF blob of this machine's byte order")
	}
	hdrLen := uint64(le.Uint32(raw[4:]))
	section := func(at int) ([]byte, error) {
		off, n := hdrLen+uint64(le.Uint32(raw[at:])), uint64(le.Uint32(raw[at+4:]))
		if hdrLen < btfHeaderLen || off+n > uint64(len(raw)) {
			return nil, errors.New("btf: section out of bounds")
		}
		return raw[off : off+n], nil
	}
	kt := &kernelTypes{named: map[string][]btf.TypeID{}, members: map[string]bool{}, decoded: map[btf.TypeID]btf.Type{}}
	var err error
	if kt.types, err = section(8); err != nil {
		return nil, err
	}
	if kt.strs, err = section(16); err != nil {
		return nil, err
	}
	for _, n := range names {
		kt.named[n] = nil
	}
	for _, n := range memberNames {
		kt.members[n] = true
	}
	for off := 0; off < len(kt.types); {
		if off+btfTypeLen > len(kt.types) {
			return nil, errors.New("btf: truncated type")
		}
		nameOff, info := le.Uint32(kt.types[off:]), le.Uint32(kt.types[off+4:])
		kind, vlen := info>>24&0x1f, int(info&0xffff)
		extra, err := typeDataLen(kind, vlen)
		if err != nil {
			return nil, err
		}
		kt.offsets = append(kt.offsets, uint32(off))
		if (kind == kindStruct || kind == kindTypedef || kind == kindFunc) && nameOff != 0 {
			name, err := kt.nameBytes(nameOff)
			if err != nil {
				return nil, err
			}
			if ids, ok := kt.named[string(name)]; ok {
				kt.named[string(name)] = append(ids, btf.TypeID(len(kt.offsets)))
			}
		}
		off += btfTypeLen + extra
		if off > len(kt.types) {
			return nil, errors.New("btf: truncated type data")
		}
	}
	return kt, nil
}

// typeDataLen is the size of what follows struct btf_type for a type of
// kind with vlen entries.
func typeDataLen(kind uint32, vlen int) (int, error) {
	switch kind {
	case kindInt, kindVar, kindDeclTag:
		return 4, nil
	case kindArray:
		return 12, nil
	case kindStruct, kindUnion, kindDatasec, kindEnum64:
		return 12 * vlen, nil
	case kindEnum, kindFuncProto:
		return 8 * vlen, nil
	case kindPtr, kindFwd, kindTypedef, kindVolatile, kindConst, kindRestrict, kindFunc, kindFloat, kindTypeTag:
		return 0, nil
	}
	return 0, fmt.Errorf("btf: unknown kind %d", kind)
}

func (kt *kernelTypes) nameBytes(off uint32) ([]byte, error) {
	if off >= uint32(len(kt.strs)) {
		return nil, errors.New("btf: name out of bounds")
	}
	s := kt.strs[off:]
	end := bytes.IndexByte(s, 0)
	if end < 0 {
		return nil, errors.New("btf: unterminated name")
	}
	return s[:end], nil
}

// TypeByName sets *typ, a **btf.Struct or **btf.Typedef, to the one struct
// or typedef called name, which must be one of the names looked for.
func (kt *kernelTypes) TypeByName(name string, typ any) error {
	var kind uint32
	switch typ.(type) {
	case **btf.Struct:
		kind = kindStruct
	case **btf.Typedef:
		kind = kindTypedef
	default:
		return fmt.Errorf("btf: looking up %T is not supported", typ)
	}
	id, err := kt.typeID(name, kind)
	if err != nil {
		return err
	}
	kt.mu.Lock()
	defer kt.mu.Unlock()
	t, err := kt.decode(id, true, 0)
	if err != nil {
		return err
	}
	switch p := typ.(type) {
	case **btf.Struct:
		*p = t.(*btf.Struct)
	case **btf.Typedef:
		*p = t.(*btf.Typedef)
	}
	return nil
}

// typeID is the ID of the one type of kind called name, which must be one
// of the names looked for.
func (kt *kernelTypes) typeID(name string, kind uint32) (btf.TypeID, error) {
	ids, ok := kt.named[name]
	if !ok {
		return 0, fmt.Errorf("btf: %s was not looked for", name)
	}
	var found []btf.TypeID
	for _, id := range ids {
		if _, info, _, _ := kt.header(id); info>>24&0x1f == kind {
			found = append(found, id)
		}
	}
	switch {
	case len(found) == 0:
		return 0, fmt.Errorf("%s: %w", name, btf.ErrNotFound)
	case len(found) > 1:
		return 0, fmt.Errorf("%s: %w", name, btf.ErrMultipleMatches)
	}
	return found[0], nil
}

// header returns type id's name offset, info, size or type, and the data
// that follows.
func (kt *kernelTypes) header(id btf.TypeID) (nameOff, info, sizeType uint32, data []byte) {
	off := kt.offsets[id-1]
	le := binary.NativeEndian
	t := kt.types[off:]
	return le.Uint32(t), le.Uint32(t[4:]), le.Uint32(t[8:]), t[btfTypeLen:]
}

// maxTypeDepth bounds the types decode goes through from the one asked for:
// well past the kernel's deepest nesting, and an end to a malformed loop.
const maxTypeDepth = 64

// decode decodes type id, depth types below the one asked for; a struct or
// union with members only when full. Pointers decode their target without
// members: a graph of structs linked by pointers decodes one struct deep.
func (kt *kernelTypes) decode(id btf.TypeID, full bool, depth int) (btf.Type, error) {
	if id == 0 {
		return &btf.Void{}, nil
	}
	if depth > maxTypeDepth {
		return nil, fmt.Errorf("btf: type %d: more than %d types deep", id, maxTypeDepth)
	}
	if int(id) > len(kt.offsets) {
		return nil, fmt.Errorf("btf: type %d out of range", id)
	}
	if t, ok := kt.decoded[id]; ok && full {
		return t, nil
	}
	nameOff, info, sizeType, data := kt.header(id)
	nameB, err := kt.nameBytes(nameOff)
	if err != nil {
		return nil, err
	}
	name := string(nameB)
	le := binary.NativeEndian
	kind, vlen, kindFlag := info>>24&0x1f, int(info&0xffff), info>>31 == 1
	target := func(full bool) (btf.Type, error) { return kt.decode(btf.TypeID(sizeType), full, depth+1) }
	var t btf.Type
	switch kind {
	case kindInt:
		t = &btf.Int{Name: name, Size: sizeType}
	case kindFloat:
		t = &btf.Float{Name: name, Size: sizeType}
	case kindPtr:
		to, err := target(false)
		if err != nil {
			return nil, err
		}
		t = &btf.Pointer{Target: to}
	case kindArray:
		elem, err := kt.decode(btf.TypeID(le.Uint32(data)), full, depth+1)
		if err != nil {
			return nil, err
		}
		index, err := kt.decode(btf.TypeID(le.Uint32(data[4:])), full, depth+1)
		if err != nil {
			return nil, err
		}
		t = &btf.Array{Type: elem, Index: index, Nelems: le.Uint32(data[8:])}
	case kindStruct, kindUnion:
		var members []btf.Member
		for i := range vlen {
			if !full {
				break
			}
			m := data[12*i:]
			mName, err := kt.nameBytes(le.Uint32(m))
			if err != nil {
				return nil, err
			}
			if len(mName) > 0 && !kt.members[string(mName)] {
				continue
			}
			mType, err := kt.decode(btf.TypeID(le.Uint32(m[4:])), true, depth+1)
			if err != nil {
				return nil, err
			}
			member := btf.Member{Name: string(mName), Type: mType, Offset: btf.Bits(le.Uint32(m[8:]))}
			if kindFlag {
				member.Offset, member.BitfieldSize = member.Offset&0xffffff, member.Offset>>24
			}
			members = append(members, member)
		}
		if kind == kindStruct {
			t = &btf.Struct{Name: name, Size: sizeType, Members: members}
		} else {
			t = &btf.Union{Name: name, Size: sizeType, Members: members}
		}
	case kindEnum, kindEnum64:
		t = &btf.Enum{Name: name, Size: sizeType}
	case kindFwd:
		t = &btf.Fwd{Name: name}
	case kindTypedef, kindVolatile, kindConst, kindRestrict, kindTypeTag:
		to, err := target(full)
		if err != nil {
			return nil, err
		}
		switch kind {
		case kindTypedef:
			t = &btf.Typedef{Name: name, Type: to}
		case kindVolatile:
			t = &btf.Volatile{Type: to}
		case kindConst:
			t = &btf.Const{Type: to}
		case kindRestrict:
			t = &btf.Restrict{Type: to}
		default:
			t = &btf.TypeTag{Type: to, Value: name}
		}
	case kindFuncProto:
		ret, err := target(false)
		if err != nil {
			return nil, err
		}
		proto := &btf.FuncProto{Return: ret}
		for i := range vlen {
			p := data[8*i:]
			pName, err := kt.nameBytes(le.Uint32(p))
			if err != nil {
				return nil, err
			}
			pType, err := kt.decode(btf.TypeID(le.Uint32(p[4:])), false, depth+1)
			if err != nil {
				return nil, err
			}
			proto.Params = append(proto.Params, btf.FuncParam{Name: string(pName), Type: pType})
		}
		t = proto
	default:
		return nil, fmt.Errorf("btf: type %d: kind %d is not decoded here", id, kind)
	}
	if full {
		kt.decoded[id] = t
	}
	return t, nil
}

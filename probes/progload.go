package probes

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"runtime"
	"slices"
	"strings"
	"unsafe"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"github.com/cilium/ebpf/btf"
	"golang.org/x/sys/unix"

	"github.com/tracepkt/tracepkt-perf/internal/caps"
)

// progLoadAttr must match the BPF_PROG_LOAD member of union bpf_attr in
// <linux/bpf.h>, up to attach_btf_obj_fd.
type progLoadAttr struct {
	progType           uint32
	insnCnt            uint32
	insns              uint64
	license            uint64
	logLevel           uint32
	logSize            uint32
	logBuf             uint64
	kernVersion        uint32
	progFlags          uint32
	progName           [16]byte
	progIfindex        uint32
	expectedAttachType uint32
	progBTFFd          uint32
	funcInfoRecSize    uint32
	funcInfo           uint64
	funcInfoCnt        uint32
	lineInfoRecSize    uint32
	lineInfo           uint64
	lineInfoCnt        uint32
	attachBTFID        uint32
	attachBTFObjFd     uint32
	_                  uint32
}

// Constants of <linux/bpf.h>.
const (
	bpfProgLoad        = 5
	bpfProgTypeTracing = 26
	bpfTraceRawTP      = 23
	verifierLogSize    = 1 << 20
	progLicense        = "Dual MIT/GPL"
	progNameMaxLen     = 15
	// verifierReasonLines of the end of a verifier log say why it refused
	// a program: the reason and the instructions it stopped at.
	verifierReasonLines = 3
)

// loadTpBTF loads insns as a BTF-typed raw tracepoint program for the
// kernel type attachID (btf_trace_<event> in vmlinux). cilium/ebpf would
// look the target up by name in a fully parsed copy of the kernel's BTF;
// the caller found its ID already.
func loadTpBTF(insns asm.Instructions, name string, attachID btf.TypeID) (*ebpf.Program, error) {
	var code bytes.Buffer
	if err := insns.Marshal(&code, nativeOrder()); err != nil {
		return nil, fmt.Errorf("load program: %w", err)
	}
	license := append([]byte(progLicense), 0)
	attr := progLoadAttr{
		progType:           bpfProgTypeTracing,
		insnCnt:            uint32(code.Len() / asm.InstructionSize),
		insns:              uint64(uintptr(unsafe.Pointer(&code.Bytes()[0]))),
		license:            uint64(uintptr(unsafe.Pointer(&license[0]))),
		expectedAttachType: bpfTraceRawTP,
		attachBTFID:        uint32(attachID),
	}
	copy(attr.progName[:progNameMaxLen], name)
	fd, err := progLoad(&attr)
	if err != nil {
		// Again with the verifier's log, to say why.
		log := make([]byte, verifierLogSize)
		attr.logLevel, attr.logSize, attr.logBuf = 1, uint32(len(log)), uint64(uintptr(unsafe.Pointer(&log[0])))
		if fd2, lerr := progLoad(&attr); lerr != nil {
			err = fmt.Errorf("%w: %s", lerr, verifierReason(log))
		} else {
			unix.Close(fd2)
		}
		runtime.KeepAlive(log)
	}
	runtime.KeepAlive(code.Bytes())
	runtime.KeepAlive(license)
	if err != nil {
		return nil, fmt.Errorf("load program: %w", caps.Explain(err, caps.LoadBPF))
	}
	prog, err := ebpf.NewProgramFromFD(fd)
	if err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("load program: %w", err)
	}
	return prog, nil
}

// verifierReason is the end of a verifier log, on one line: the verifier
// writes its reason last, after the instructions it walked, and the closing
// "processed N insns" statistics say nothing about why. The log ends at its
// first NUL: the kernel rewinds the log as it prunes states, and what it
// wrote past the end before stays in the buffer.
func verifierReason(log []byte) string {
	if end := bytes.IndexByte(log, 0); end >= 0 {
		log = log[:end]
	}
	lines := strings.Split(string(log), "\n")
	var reason []string
	for i := len(lines) - 1; i >= 0 && len(reason) < verifierReasonLines; i-- {
		line := strings.TrimSpace(lines[i])
		if line == "" || len(reason) == 0 && strings.HasPrefix(line, "processed ") {
			continue
		}
		reason = append(reason, line)
	}
	if len(reason) == 0 {
		return "no verifier log"
	}
	slices.Reverse(reason)
	return "verifier: " + strings.Join(reason, " / ")
}

// progLoad runs BPF_PROG_LOAD, retried on EAGAIN as libbpf does.
func progLoad(attr *progLoadAttr) (int, error) {
	for range 5 {
		fd, _, errno := unix.Syscall(unix.SYS_BPF, bpfProgLoad, uintptr(unsafe.Pointer(attr)), unsafe.Sizeof(*attr))
		if errno == unix.EAGAIN {
			continue
		}
		if errno != 0 {
			return -1, errno
		}
		return int(fd), nil
	}
	return -1, errors.New("BPF_PROG_LOAD: EAGAIN")
}

// nativeOrder is the machine's byte order as one of the two that
// asm.Instructions.Marshal knows.
func nativeOrder() binary.ByteOrder {
	if binary.NativeEndian.Uint16([]byte{1, 0}) == 1 {
		return binary.LittleEndian
	}
	return binary.BigEndian
}

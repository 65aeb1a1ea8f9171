package probes

import (
	"github.com/cilium/ebpf/asm"

	"github.com/tracepkt/tracepkt-perf/decode"
)

// A listener (tracepkt-perf --listen) sends nothing: it keeps the echoes of
// any run of the tool, from any machine, by what every run puts in their
// payload. The pinger's 8-byte cookie is the run's 4 bytes (random, then
// the run's echo id, which a NAT may rewrite in the header but never in the
// payload) and decode.ListenMagic.
const (
	// cookieRunID and cookieMagic are the offsets, in an echo message, of
	// the run's echo id in the cookie and of the magic.
	cookieRunID = 8 + 2
	cookieMagic = 8 + 4
	listenBytes = 8 + 8
)

// ListenClauses are the clauses of a listener: the echoes of any run, or
// only of the run of echo id id when it is not 0, and the ICMP errors
// quoting them. Records carry the run's echo id from the cookie.
func ListenClauses(id uint16) []Clause {
	return []Clause{
		{
			Name:    "listen",
			Proto4:  1,
			Proto6:  58,
			L4Bytes: listenBytes,
			Test: func(family int, l4 int16, ours, next string) asm.Instructions {
				return note("a run's echo, by the magic in its payload", append(listenOurs(id, l4, next), echoTypes(family, l4, ours, ours, next)...))
			},
			Fill: func(_ int, l4 int16, _ string) asm.Instructions { return listenFields(l4, l4) },
		},
		{
			Name:    "listen_error",
			Proto4:  1,
			Proto6:  58,
			L4Bytes: quotedL4v6 + listenBytes,
			Test: func(family int, l4 int16, ours, next string) asm.Instructions {
				proto := int32(58)
				if family == 4 {
					proto = 1
				}
				insns := note("an error quoting a run's echo", quoting(family, l4, proto, ours, next))
				insns = append(insns, listenOurs(id, quotedL4(family, l4), next)...)
				return append(insns, echoTypes(family, quotedL4(family, l4), ours, ours, next)...)
			},
			Fill: func(family int, l4 int16, _ string) asm.Instructions { return listenFields(l4, quotedL4(family, l4)) },
		},
	}
}

// listenOurs jumps to next unless the echo message at echo carries the
// magic, and, when id is not 0, the run's echo id id in its cookie.
func listenOurs(id uint16, echo int16, next string) asm.Instructions {
	insns := asm.Instructions{
		asm.LoadMem(asm.R1, asm.RFP, echo+cookieMagic, asm.Word),
		asm.JNE.Imm32(asm.R1, wire32(decode.ListenMagic), next),
	}
	if id != 0 {
		insns = append(insns,
			asm.LoadMem(asm.R1, asm.RFP, echo+cookieRunID, asm.Half),
			asm.JNE.Imm(asm.R1, wire(id), next),
		)
	}
	return insns
}

// listenFields copies the ICMP type at typ, and the run's echo id (from
// the cookie) and the sequence of the echo message at echo, into the
// record.
func listenFields(typ, echo int16) asm.Instructions {
	return asm.Instructions{
		asm.LoadMem(asm.R1, asm.RFP, typ, asm.Byte).WithSource(asm.Comment("ICMP type, the run's echo id from the cookie, the sequence")),
		asm.StoreMem(asm.RFP, rec(decode.OffICMPType), asm.R1, asm.Byte),
		asm.LoadMem(asm.R1, asm.RFP, echo+cookieRunID, asm.Half),
		asm.StoreMem(asm.RFP, rec(decode.OffEchoID), asm.R1, asm.Half),
		asm.LoadMem(asm.R1, asm.RFP, echo+6, asm.Half),
		asm.StoreMem(asm.RFP, rec(decode.OffSeq), asm.R1, asm.Half),
	}
}

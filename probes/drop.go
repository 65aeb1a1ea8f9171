package probes

import (
	"fmt"

	"github.com/tracepkt/tracepkt-perf/decode"
	"github.com/tracepkt/tracepkt-perf/tracefs"
)

// kernelDropFields reads where skb:kfree_skb keeps location and reason on this
// kernel; a kernel without reasons (before 5.17) gives Reason -1.
func kernelDropFields(fs *tracefs.FS) (DropFields, error) {
	group, event := decode.ProbeKfreeSkb.Tracepoint()
	fields, err := fs.Format(group, event)
	if err != nil {
		return DropFields{}, err
	}
	return dropFieldsOf(fields)
}

// dropFieldsOf finds location (8 bytes) and reason (4 bytes) among fields.
func dropFieldsOf(fields []tracefs.Field) (DropFields, error) {
	f := DropFields{Location: -1, Reason: -1}
	for _, fd := range fields {
		switch {
		case fd.Name == "location" && fd.Size == 8:
			f.Location = int16(fd.Offset)
		case fd.Name == "reason" && fd.Size == 4:
			f.Reason = int16(fd.Offset)
		}
	}
	if f.Location < 0 {
		return f, fmt.Errorf("no 8-byte location field")
	}
	return f, nil
}

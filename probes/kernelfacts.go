package probes

import (
	"fmt"
	"sync"

	"github.com/cilium/ebpf/btf"

	"github.com/tracepkt/tracepkt-perf/decode"
)

// kernelFacts are what the device programs learn from the running kernel's
// BTF: the members they read, and for each raw tracepoint the ID of its
// btf_trace_<event> typedef and where its arguments are. They depend only
// on the kernel's build, and are cached by its build id (factsCache).
type kernelFacts struct {
	Offsets Offsets
	// Raw are the raw tracepoints' facts, by event.
	Raw map[string]rawFacts
	// BuiltIn says, for each netfilter kprobe's function, whether vmlinux
	// has it: where it has not and its module is not loaded, a run knows
	// there is no kprobe to place without reading the whole BTF.
	BuiltIn map[string]bool
}

// rawFacts are the facts of one raw tracepoint, or Err, why its arguments
// could not be read.
type rawFacts struct {
	TypedefID btf.TypeID
	SkbOffset int16
	Drop      DropFields
	Err       string `json:",omitempty"`
}

// rawTracepoint returns event's facts, or why there are none.
func (f *kernelFacts) rawTracepoint(event string) (rawFacts, error) {
	r, ok := f.Raw[event]
	switch {
	case !ok:
		return rawFacts{}, fmt.Errorf("btf: raw tracepoint %s was not looked for", event)
	case r.Err != "":
		return rawFacts{}, fmt.Errorf("%s", r.Err)
	}
	return r, nil
}

// deviceFacts are the running kernel's facts, read once per process: from
// the cache when it holds this kernel's, else from its BTF (then cached).
var deviceFacts = sync.OnceValues(func() (*kernelFacts, error) {
	c := defaultFactsCache()
	if f, ok := c.load(); ok {
		return f, nil
	}
	types, err := loadKernelTypes(deviceTypeNames())
	if err != nil {
		return nil, err
	}
	f, err := factsOf(types)
	if err != nil {
		return nil, err
	}
	c.store(f)
	return f, nil
})

// factsOf reads the device programs' facts from types.
func factsOf(types *kernelTypes) (*kernelFacts, error) {
	o, err := LookupOffsets(types)
	if err != nil {
		return nil, err
	}
	f := &kernelFacts{Offsets: o, Raw: map[string]rawFacts{}, BuiltIn: map[string]bool{}}
	for _, p := range netfilterProbes {
		_, err := types.typeID(p.Kprobe(), kindFunc)
		f.BuiltIn[p.Kprobe()] = err == nil
	}
	for _, p := range decode.Probes() {
		_, event := p.Tracepoint()
		r, err := rawFactsOf(types, p)
		if err != nil {
			r = rawFacts{Err: err.Error()}
		}
		f.Raw[event] = r
	}
	return f, nil
}

// rawFactsOf reads the facts of probe p's raw tracepoint from types.
func rawFactsOf(types *kernelTypes, p decode.Probe) (rawFacts, error) {
	_, event := p.Tracepoint()
	var r rawFacts
	id, err := types.typeID(tracepointTypedef(event), kindTypedef)
	if err != nil {
		return r, fmt.Errorf("btf: raw tracepoint %s: %w", event, err)
	}
	r.TypedefID = id
	args, err := RawTracepointArgs(types, event)
	if err != nil {
		return r, err
	}
	skb := argIndex(args, isSkb)
	if skb < 0 {
		return r, fmt.Errorf("btf: raw tracepoint %s has no struct sk_buff * argument", event)
	}
	r.SkbOffset = int16(8 * skb)
	if p == decode.ProbeKfreeSkb {
		if r.Drop, err = rawDropFields(args); err != nil {
			return r, fmt.Errorf("btf: raw tracepoint %s: %w", event, err)
		}
	}
	return r, nil
}

package main

import (
	"cmp"
	"fmt"
	"io"
	"slices"
	"time"

	"github.com/tracepkt/tracepkt-perf/decode"
	"github.com/tracepkt/tracepkt-perf/decode/pcapng"
	"github.com/tracepkt/tracepkt-perf/decode/stats"
)

// A merge (--merge A.tpk B.tpk ...) joins what several machines recorded of
// the same probes into one journey each: the run that sent them (or the
// first file) is the reference; each other machine's rows are put on the
// reference's clock by the offset the probes' own crossings give, named by
// the machine's host, its namespaces kept apart from the reference's.

// mergeFile is one recording read whole, and its echoes (a run's, or a
// listener's fragments) by echo id and sequence.
type mergeFile struct {
	*loadedRun
	listen bool
	echoes map[[2]uint16]*decode.Journey
	order  [][2]uint16
}

// readMergeFile reads the recording at path whole.
func readMergeFile(path string, stderr io.Writer) (*mergeFile, error) {
	l, err := loadRun("merge", path, stderr)
	if err != nil {
		return nil, err
	}
	m := &mergeFile{loadedRun: l, listen: l.rc.listen, echoes: map[[2]uint16]*decode.Journey{}}
	for i := range l.journeys {
		j := &l.journeys[i]
		k := [2]uint16{j.EchoID, j.Seq}
		if m.echoes[k] == nil {
			m.order = append(m.order, k)
		}
		m.echoes[k] = j
	}
	return m, nil
}

// same reports whether a and b are the same recording: one run's header.
func (a *mergeFile) same(b *mergeFile) bool {
	return a.hdr.BootID == b.hdr.BootID && a.hdr.StartKtime == b.hdr.StartKtime && a.hdr.Hostname == b.hdr.Hostname
}

// mergeRuns reads the recordings of o.mergeFiles and writes one journey per
// probe of the reference, with every machine's rows in order.
func mergeRuns(o options, stdout, stderr io.Writer) error {
	var files []*mergeFile
	for _, path := range o.mergeFiles {
		f, err := readMergeFile(path, stderr)
		if err != nil {
			return err
		}
		for _, g := range files {
			if g.same(f) {
				return fmt.Errorf("merge: %s and %s are the same recording", g.path, f.path)
			}
		}
		files = append(files, f)
	}
	// The run that sent the probes is the reference; else the first file.
	ref := slices.IndexFunc(files, func(f *mergeFile) bool { return !f.listen })
	if ref < 0 {
		ref = 0
	}
	files[0], files[ref] = files[ref], files[0]
	rc := newRenderContext(files[0].hdr.Capabilities)
	rc.listen = files[0].listen
	m := merger{rc: rc, ref: files[0]}
	for i, f := range files {
		if err := m.add(f, i); err != nil {
			return err
		}
	}
	if o.pcapng != "" {
		return m.exportPcapng(o.pcapng, stderr)
	}
	ro, err := newRunOutput(o, stdout)
	if err != nil {
		return err
	}
	defer ro.close()
	w := ro.writer(rc)
	n := 0
	for _, k := range files[0].order {
		j := m.journey(k)
		if unanswered(&j, rc) {
			n++
		}
		if err := w.Journey(&j); err != nil {
			return err
		}
	}
	return ro.end(n)
}

// exportPcapng writes the packets of every merged journey to path, on the
// reference's clock, each interface described by its machine and namespace
// as the table names them.
func (m *merger) exportPcapng(path string, stderr io.Writer) error {
	n, err := writePcapngFile(path, func(w io.Writer) (int, error) {
		p, err := pcapng.NewWriter(w, &m.ref.hdr, nil)
		if err != nil {
			return 0, err
		}
		p.Netns = m.rc.netnsCell
		n := 0
		for _, k := range m.ref.order {
			j := m.journey(k)
			c, err := p.WriteJourney(&j)
			if n += c; err != nil {
				return n, err
			}
		}
		return n, p.Close()
	})
	if err != nil {
		return err
	}
	fmt.Fprintf(stderr, "wrote %d packets to %s\n", n, path)
	return nil
}

// merger holds the machines of a merge: how each one's namespaces are told
// apart from the others' (a machine that is not the reference's gets
// namespace numbers of its own: two machines' namespaces may share an
// inode), and its clock's offset.
type merger struct {
	rc       *renderContext
	ref      *mergeFile
	machines []machine
	next     uint32 // the next namespace number given to another machine's
}

type machine struct {
	file   *mergeFile
	netns  map[uint32]uint32 // the file's inode -> the merge's
	offset decode.ClockOffset
	same   bool // recorded on the reference's machine: its clock, its namespaces
	unseen bool // a listener that saw none of the run's echoes: no clock, no rows
}

// add adds file f, the i-th: its namespaces, named after its host, and its
// clock's offset from the reference's, from the probes both saw.
func (m *merger) add(f *mergeFile, i int) error {
	mc := machine{file: f, netns: map[uint32]uint32{}, same: f.hdr.BootID == m.ref.hdr.BootID}
	if i > 0 {
		crossings := map[uint16]decode.Crossing{}
		for k, e := range f.echoes {
			if r := m.ref.echoes[k]; r != nil {
				crossings[k[1]] = crossing(records(r), records(e))
			}
		}
		switch {
		case len(crossings) == 0 && (!f.listen || m.ref.listen || f.hdr.StartWall.After(m.ref.hdr.StartWall)):
			return fmt.Errorf("merge: %s shares no echo with %s: recordings of unrelated runs", f.path, m.ref.path)
		case len(crossings) == 0:
			// A listener that listened from before the run began, and
			// kept none of its echoes: they never reached its machine.
			mc.unseen = true
		case !mc.same:
			var ok bool
			if mc.offset, ok = decode.EstimateOffset(crossings); !ok {
				return fmt.Errorf("merge: %s and %s saw none of the same echoes' packets: no clock to join them by", f.path, m.ref.path)
			}
		}
	}
	// The names the file's snapshots gave its namespaces and interfaces.
	for inode, name := range f.rc.names {
		m.rc.names[m.inode(&mc, inode)] = name
	}
	for inode, owner := range f.rc.owners {
		m.rc.owners[m.inode(&mc, inode)] = owner
	}
	for k, name := range f.rc.ifnames {
		m.rc.ifnames[ifaceKey{m.inode(&mc, k.netns), k.ifindex}] = name
	}
	m.machines = append(m.machines, mc)
	return nil
}

// inode is the merge's number for namespace inode of machine mc, named
// after the machine's host.
func (m *merger) inode(mc *machine, inode uint32) uint32 {
	if mc.same {
		m.rc.setHost(inode, inode, mc.file.hdr.Hostname)
		return inode
	}
	if n, ok := mc.netns[inode]; ok {
		return n
	}
	m.next++
	mc.netns[inode] = m.next
	m.rc.setHost(m.next, inode, mc.file.hdr.Hostname)
	return m.next
}

// crossing is where the request and the reply left one machine's records
// (ref) and entered another's (other).
func crossing(ref, other []decode.Record) decode.Crossing {
	var c decode.Crossing
	for _, r := range ref {
		switch {
		case r.Lost > 0:
		case r.IsRequest() && r.Probe.Direction() == decode.Out:
			c.A1 = max(c.A1, r.Time)
		case !r.IsRequest() && r.Probe.Direction() == decode.In && (c.A2 == 0 || r.Time < c.A2):
			c.A2 = r.Time
		}
	}
	for _, r := range other {
		switch {
		case r.Lost > 0:
		case r.IsRequest() && (c.B1 == 0 || r.Time < c.B1):
			c.B1 = r.Time
		case !r.IsRequest() && r.Probe.Direction() == decode.Out:
			c.B2 = max(c.B2, r.Time)
		}
	}
	return c
}

// journey is probe k's journey across every machine: the reference's
// outcome, every machine's rows on the reference's clock, and the drop and
// hint from the machine that saw the drop.
func (m *merger) journey(k [2]uint16) decode.Journey {
	ref := m.ref.echoes[k]
	o := ref.Outcome
	var recs []decode.Record
	var events []decode.NetfilterEvent
	for i := range m.machines {
		mc := &m.machines[i]
		e := mc.file.echoes[k]
		if e == nil {
			continue
		}
		seen := records(ref) // rows both tools saw of one kernel are kept once
		for _, r := range records(e) {
			if i > 0 && mc.same && slices.ContainsFunc(seen, func(x decode.Record) bool { return sameRow(x, r) }) {
				continue // both tools saw this row of the one kernel
			}
			recs = append(recs, m.moved(mc, r))
		}
		for _, ev := range e.Netfilter {
			ev.Netns = m.inode(mc, ev.Netns)
			if ev.Time != 0 {
				ev.Time = uint64(int64(ev.Time) - mc.offset.Offset)
			}
			events = append(events, ev)
		}
		if i > 0 && o.Drop == nil && e.Drop != nil {
			d := *e.Drop
			d.Netns = m.inode(mc, d.Netns)
			d.Time = uint64(int64(d.Time) - mc.offset.Offset)
			o.Drop, o.Hint = &d, e.Hint
		}
	}
	slices.SortStableFunc(recs, func(a, b decode.Record) int { return cmp.Compare(a.Time, b.Time) })
	o.Notes = slices.Clone(o.Notes)
	for _, mc := range m.machines[1:] {
		o.Notes = append(o.Notes, m.clockLine(&mc))
	}
	return decode.NewJourney(o, recs, events)
}

// records are the records journey j was made of: its hops and its frees.
func records(j *decode.Journey) []decode.Record { return slices.Concat(j.Hops, j.Frees) }

// sameRow reports whether two records of one kernel are the same row.
func sameRow(a, b decode.Record) bool {
	return a.Netns == b.Netns && a.Ifindex == b.Ifindex && a.Probe == b.Probe && a.ICMPType == b.ICMPType && a.Seq == b.Seq
}

// moved is record r of machine mc on the reference's clock and namespaces.
func (m *merger) moved(mc *machine, r decode.Record) decode.Record {
	if r.Lost == 0 {
		r.Netns = m.inode(mc, r.Netns)
		r.Time = uint64(int64(r.Time) - mc.offset.Offset)
	}
	return r
}

// clockLine says how machine mc's clock was joined to the reference's.
func (m *merger) clockLine(mc *machine) string {
	h, ref := mc.file.hdr.Hostname, m.ref.hdr.Hostname
	if mc.unseen {
		return fmt.Sprintf("%s saw none of these echoes: %s listened there from before the run began, and kept none of them", h, mc.file.path)
	}
	if mc.same {
		return fmt.Sprintf("clock: %s is recorded on %s's machine (boot %s): one clock", mc.file.path, ref, m.ref.hdr.BootID)
	}
	// The offset of the kernel clocks, less what the machines' wall clocks
	// say of each other at the start of their runs: how far h's wall clock
	// is from ref's.
	wall := mc.offset.Offset - (int64(mc.file.hdr.StartKtime) - int64(m.ref.hdr.StartKtime)) + mc.file.hdr.StartWall.Sub(m.ref.hdr.StartWall).Nanoseconds()
	ahead := "ahead of"
	if wall < 0 {
		wall, ahead = -wall, "behind"
	}
	if !mc.offset.TwoWay {
		// The request took some time on the wire: the offset is at most the
		// one that takes none.
		bound := "at most " + stats.FormatDuration(time.Duration(wall)) + " ahead of"
		if ahead != "ahead of" {
			bound = "at least " + stats.FormatDuration(time.Duration(wall)) + " behind"
		}
		return fmt.Sprintf("clock: %s's rows placed right after the request left %s (seq %d): no reply crossed back, so its wall clock is only known to be %s %s's",
			h, ref, mc.offset.Seq, bound, ref)
	}
	from := fmt.Sprintf("seq %d", mc.offset.Seq)
	if mc.offset.Probes > 1 {
		from = fmt.Sprintf("%d probes", mc.offset.Probes)
	}
	return fmt.Sprintf("clock: %s's wall clock is %s %s %s's, ±%s (from the crossings of %s)",
		h, stats.FormatDuration(time.Duration(wall)), ahead, ref, stats.FormatDuration(time.Duration(mc.offset.Uncertainty)), from)
}

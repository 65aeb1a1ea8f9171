package main

import (
	"bytes"
	"reflect"

	"github.com/olekukonko/tablewriter"
	"github.com/olekukonko/tablewriter/pkg/twcache"
	"github.com/olekukonko/tablewriter/renderer"
	"github.com/olekukonko/tablewriter/tw"
)

// plainTable lays out tables without borders, columns two spaces apart. It
// keeps one tablewriter.Table and resets it for each table: building one per
// echo cost more than the rest of a replay together (NewTable allocates a
// 10,240-entry stringer cache map), so a writer of many tables reuses it.
type plainTable struct {
	buf   bytes.Buffer
	table *tablewriter.Table
}

func newPlainTable() *plainTable {
	p := &plainTable{}
	p.table = tablewriter.NewTable(&p.buf,
		tablewriter.WithRenderer(renderer.NewBlueprint(tw.Rendition{
			Borders:  tw.BorderNone,
			Symbols:  tw.NewSymbols(tw.StyleNone),
			Settings: tw.Settings{Separators: tw.Separators{BetweenColumns: tw.On}, Lines: tw.LinesNone},
		})),
		tablewriter.WithHeaderAutoFormat(tw.Off),
		tablewriter.WithHeaderAlignment(tw.AlignLeft),
		tablewriter.WithRowAlignment(tw.AlignLeft),
		tablewriter.WithPadding(tw.Padding{Right: "  ", Overwrite: true}),
		// Cells are strings, so the stringer cache is never read; Reset
		// purges it by allocating a map of its capacity again, so keep
		// that capacity at one entry.
		tablewriter.WithStringerCacheCustom(twcache.NewLRU[reflect.Type, reflect.Value](1)),
	)
	return p
}

// start begins a new table with its header.
func (p *plainTable) start(header []string) {
	p.table.Reset()
	p.table.Header(header)
}

// row adds a row of cells.
func (p *plainTable) row(cells []string) error {
	return p.table.Append(cells)
}

// appendTo renders the table and appends it to out, without the blanks the
// renderer pads the last column with: they only get in the way of copy and
// paste.
func (p *plainTable) appendTo(out []byte) ([]byte, error) {
	p.buf.Reset()
	if err := p.table.Render(); err != nil {
		return out, err
	}
	for line := range bytes.SplitAfterSeq(p.buf.Bytes(), []byte("\n")) {
		out = append(out, bytes.TrimRight(line, " \n")...)
		if bytes.HasSuffix(line, []byte("\n")) {
			out = append(out, '\n')
		}
	}
	return out, nil
}

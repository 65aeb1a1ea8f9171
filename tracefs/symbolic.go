package tracefs

import (
	"bufio"
	"fmt"
	"io"
	"strconv"
	"strings"
)

// Symbols returns the names the kernel prints for the values of field in
// group:event, from the __print_symbolic list of its format's print fmt
// (skb:kfree_skb's reason: 2 is "NOT_SPECIFIED" on 6.18, 1 on 6.1). A
// field without one gives an empty map.
func (fs *FS) Symbols(group, event, field string) (map[uint64]string, error) {
	f, err := fs.openFormat(group, event)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	syms, err := parseSymbols(f, field)
	if err != nil {
		return nil, fmt.Errorf("parse format of %s:%s: %w", group, event, err)
	}
	return syms, nil
}

// parseSymbols reads the print fmt line of a format file and returns the
// { value, "NAME" } pairs of __print_symbolic(REC->field, ...).
func parseSymbols(r io.Reader, field string) (map[uint64]string, error) {
	s := bufio.NewScanner(r)
	s.Buffer(nil, 1<<20) // print fmt lines of long enums pass 64 KiB
	syms := map[uint64]string{}
	for s.Scan() {
		line, ok := strings.CutPrefix(s.Text(), "print fmt:")
		if !ok {
			continue
		}
		_, list, ok := strings.Cut(line, "__print_symbolic(REC->"+field+",")
		if !ok {
			return syms, nil
		}
		for {
			list = strings.TrimLeft(list, " ,")
			if !strings.HasPrefix(list, "{") {
				return syms, nil
			}
			end := strings.IndexByte(list, '}')
			if end < 0 {
				return nil, fmt.Errorf("unterminated symbol in print fmt")
			}
			value, name, ok := strings.Cut(list[1:end], ",")
			if !ok {
				return nil, fmt.Errorf("bad symbol %q in print fmt", list[:end+1])
			}
			v, err := strconv.ParseUint(strings.TrimSpace(value), 0, 64)
			if err != nil {
				return nil, fmt.Errorf("bad symbol value in %q: %w", list[:end+1], err)
			}
			if syms[v], err = strconv.Unquote(strings.TrimSpace(name)); err != nil {
				return nil, fmt.Errorf("bad symbol name in %q: %w", list[:end+1], err)
			}
			list = list[end+1:]
		}
	}
	return syms, s.Err()
}

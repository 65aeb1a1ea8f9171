package probes

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"os"
	"strconv"
)

// KernelSymbols resolves kernel text addresses to "function+0xoffset"
// through /proc/kallsyms (root sees real addresses). Addresses it cannot
// place are shown in hex.
func KernelSymbols(addrs []uint64) (map[uint64]string, error) {
	f, err := os.Open("/proc/kallsyms")
	if err != nil {
		return nil, fmt.Errorf("resolve drop locations: %w", err)
	}
	defer f.Close()
	return resolveSymbols(f, addrs)
}

// resolveSymbols reads a kallsyms table ("ffffffff81a2b3c0 T ip_error" or
// with a " [module]" suffix) once, and names each address after the
// closest text symbol at or below it.
func resolveSymbols(r io.Reader, addrs []uint64) (map[uint64]string, error) {
	type best struct {
		addr uint64
		name []byte
	}
	found := make([]best, len(addrs))
	s := bufio.NewScanner(r)
	for s.Scan() {
		line := s.Bytes()
		sp := bytes.IndexByte(line, ' ')
		if sp < 0 || len(line) < sp+4 || line[sp+2] != ' ' {
			continue
		}
		switch line[sp+1] {
		case 't', 'T', 'w', 'W':
		default:
			continue
		}
		sym, err := strconv.ParseUint(string(line[:sp]), 16, 64)
		if err != nil || sym == 0 {
			continue
		}
		name := line[sp+3:]
		if i := bytes.IndexAny(name, " \t"); i >= 0 {
			name = name[:i]
		}
		for i, a := range addrs {
			if sym <= a && sym > found[i].addr {
				found[i] = best{sym, append(found[i].name[:0], name...)}
			}
		}
	}
	if err := s.Err(); err != nil {
		return nil, fmt.Errorf("read kallsyms: %w", err)
	}
	out := make(map[uint64]string, len(addrs))
	for i, a := range addrs {
		if found[i].addr == 0 {
			out[a] = fmt.Sprintf("%#x", a)
			continue
		}
		out[a] = fmt.Sprintf("%s+%#x", found[i].name, a-found[i].addr)
	}
	return out, nil
}

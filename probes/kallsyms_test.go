package probes

import (
	"strings"
	"testing"
)

func TestResolveSymbols(t *testing.T) {
	const table = `0000000000000000 A fixed_percpu_data
ffffffff81000000 T _stext
ffffffff81a2b3c0 t ip_error
ffffffff81a2b500 T ip_rcv_finish_core
ffffffff81a2b500 d some_data_at_the_same_place
ffffffff81a2c000 D ip_data_after
ffffffffc0a01000 t nft_do_chain	[nf_tables]
`
	got, err := resolveSymbols(strings.NewReader(table), []uint64{
		0xffffffff81a2b41c, 0xffffffff81a2b500, 0xffffffff81a2c010, 0xffffffffc0a01234, 0x1000,
	})
	if err != nil {
		t.Fatal(err)
	}
	want := map[uint64]string{
		0xffffffff81a2b41c: "ip_error+0x5c",
		0xffffffff81a2b500: "ip_rcv_finish_core+0x0",
		0xffffffff81a2c010: "ip_rcv_finish_core+0xb10", // data symbols do not count
		0xffffffffc0a01234: "nft_do_chain+0x234",
		0x1000:             "0x1000",
	}
	for a, w := range want {
		if got[a] != w {
			t.Errorf("%#x = %q, want %q", a, got[a], w)
		}
	}
}

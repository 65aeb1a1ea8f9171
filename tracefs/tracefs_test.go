package tracefs

import (
	"strings"
	"testing"
)

func TestFindMount(t *testing.T) {
	mounts := `sysfs /sys sysfs rw,nosuid 0 0
nodev /sys/kernel/debug debugfs rw 0 0
nodev /mnt/trace\040fs tracefs rw,relatime 0 0
nodev /sys/kernel/tracing tracefs rw,relatime 0 0
`
	got, ok := findMount(strings.NewReader(mounts))
	if !ok || got != "/mnt/trace fs" {
		t.Fatalf("findMount = %q, %v; want %q, true", got, ok, "/mnt/trace fs")
	}
	if _, ok := findMount(strings.NewReader("sysfs /sys sysfs rw 0 0\n")); ok {
		t.Fatal("findMount found tracefs in a table without one")
	}
}

func TestParseFormat(t *testing.T) {
	format := `name: napi_gro_receive_entry
ID: 2300
format:
	field:unsigned short common_type;	offset:0;	size:2;	signed:0;
	field:__data_loc char[] name;	offset:8;	size:4;	signed:0;
	field:const void * skbaddr;	offset:24;	size:8;	signed:0;
	field:char comm[16];	offset:28;	size:16;	signed:0;

print fmt: "dev=%s", __get_str(name)
`
	fields, err := parseFormat(strings.NewReader(format))
	if err != nil {
		t.Fatal(err)
	}
	want := []Field{{"common_type", 0, 2}, {"name", 8, 4}, {"skbaddr", 24, 8}, {"comm", 28, 16}}
	if len(fields) != len(want) {
		t.Fatalf("got %d fields %+v, want %+v", len(fields), fields, want)
	}
	for i := range want {
		if fields[i] != want[i] {
			t.Errorf("field %d = %+v, want %+v", i, fields[i], want[i])
		}
	}
	if _, err := parseFormat(strings.NewReader("\tfield:int x;\toffset:eight;\tsize:4;\n")); err == nil {
		t.Error("parseFormat accepted a non-numeric offset")
	}
}

func TestKprobeDefinition(t *testing.T) {
	if got := KprobeDefinition("tracepkt_1_ab", "ipt_do_table", "ipt_do_table", false); got != "p:tracepkt_1_ab/ipt_do_table ipt_do_table" {
		t.Errorf("entry probe: %q", got)
	}
	if got := KprobeDefinition("tracepkt_1_ab", "nft_ret", "nft_do_chain", true); got != "r:tracepkt_1_ab/nft_ret nft_do_chain" {
		t.Errorf("return probe: %q", got)
	}
}

func TestStaleProbe(t *testing.T) {
	alive := func(pid int) bool { return pid == 100 }
	for line, want := range map[string]string{
		"p:tracepkt_200_0a1b2c3d/ipt_do_table ipt_do_table":     "tracepkt_200_0a1b2c3d/ipt_do_table",
		"r:tracepkt_200_0a1b2c3d/nft_ret nft_do_chain arg1=%ax": "tracepkt_200_0a1b2c3d/nft_ret",
		"p:tracepkt_100_0a1b2c3d/ipt_do_table ipt_do_table":     "", // its process lives
		"p:kprobes/do_sys_open do_sys_open":                     "", // not ours
		"p:tracepkt_x_0a/ipt ipt_do_table":                      "",
		"garbage":                                               "",
	} {
		got, ok := staleProbe(line, alive)
		if got != want || ok != (want != "") {
			t.Errorf("staleProbe(%q) = %q, %v; want %q", line, got, ok, want)
		}
	}
}

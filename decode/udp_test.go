package decode

import (
	"bytes"
	"encoding/binary"
	"errors"
	"testing"
)

func TestUDPMarkPayloads(t *testing.T) {
	plain, err := NewUDPMark(0x1234, 0xdeadbeef, 7, nil)
	if err != nil {
		t.Fatal(err)
	}
	if got, want := plain.Payload(5), []byte{0xde, 0xad, 0xbe, 0xef, 0, 5, 0x12, 0x34}; !bytes.Equal(got, want) {
		t.Errorf("payload to port 7: % x, want % x", got, want)
	}
	user, err := NewUDPMark(0x1234, 0xdeadbeef, 7, []byte("hi"))
	if err != nil {
		t.Fatal(err)
	}
	if got, want := user.Payload(1), []byte{'h', 'i', 0xde, 0xad, 0xbe, 0xef, 0, 1, 0x12, 0x34}; !bytes.Equal(got, want) {
		t.Errorf("user payload: % x, want % x", got, want)
	}
	if _, err := NewUDPMark(1, 1, 7, make([]byte, MaxPayload-MarkLen+1)); err == nil {
		t.Error("a payload past MaxPayload was taken")
	}
	dns, err := NewUDPMark(0x1234, 0xdeadbeef, DNSPort, nil)
	if err != nil {
		t.Fatal(err)
	}
	q := dns.Payload(9)
	// RFC 1035 header: id = the probe, RD, one question, one additional.
	if id, flags := binary.BigEndian.Uint16(q), binary.BigEndian.Uint16(q[2:]); id != 9 || flags != 0x0100 {
		t.Errorf("DNS id %d flags %#x, want 9 and 0x0100", id, flags)
	}
	// The question (root, NS, IN), then the OPT record whose rdata is one
	// COOKIE option (code 10) of 8 bytes: the mark.
	opt := q[12+5:]
	if opt[0] != 0 || binary.BigEndian.Uint16(opt[1:]) != 41 {
		t.Fatalf("no OPT record after the question: % x", opt)
	}
	rdata := opt[11:]
	if int(binary.BigEndian.Uint16(opt[9:])) != len(rdata) || binary.BigEndian.Uint16(rdata) != 10 || binary.BigEndian.Uint16(rdata[2:]) != 8 {
		t.Fatalf("OPT rdata % x is not one 8-byte COOKIE option", rdata)
	}
	if got := rdata[4:]; !bytes.Equal(got, plain.Payload(9)) {
		t.Errorf("client cookie % x, want the mark % x", got, plain.Payload(9))
	}
	for _, m := range []UDPMark{plain, user, dns} {
		reply := append([]byte("answer "), m.Payload(300)...)
		if seq, ok := m.Find(reply); !ok || seq != 300 {
			t.Errorf("Find in a reply echoing probe 300: %d %v", seq, ok)
		}
	}
	other := plain
	other.EchoID++
	if _, ok := plain.Find(other.Payload(3)); ok {
		t.Error("Find took the mark of another run")
	}
	if _, ok := plain.Find(plain.Payload(3)[:MarkLen-1]); ok {
		t.Error("Find took a cut mark")
	}
}

func TestParsePayload(t *testing.T) {
	read := func(name string) ([]byte, error) {
		if name == "q.bin" {
			return []byte{1, 2}, nil
		}
		return nil, errors.New("no such file")
	}
	for _, tc := range []struct {
		in   string
		want []byte
		bad  bool
	}{
		{in: "0a0B", want: []byte{10, 11}},
		{in: "0a:0b 0c", want: []byte{10, 11, 12}},
		{in: "", want: []byte{}},
		{in: "@q.bin", want: []byte{1, 2}},
		{in: "@missing", bad: true},
		{in: "abc", bad: true},
		{in: "zz", bad: true},
	} {
		got, err := ParsePayload(tc.in, read)
		if (err != nil) != tc.bad || !bytes.Equal(got, tc.want) || (!tc.bad && got == nil) {
			t.Errorf("ParsePayload(%q) = % x, %v", tc.in, got, err)
		}
	}
}

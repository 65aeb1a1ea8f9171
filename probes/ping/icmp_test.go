package ping

import (
	"bytes"
	"errors"
	"testing"
	"time"
)

func TestChecksum(t *testing.T) {
	for _, tc := range []struct {
		name string
		in   []byte
		want uint16
	}{
		{"empty", nil, 0xffff},
		{"rfc1071 example", []byte{0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7}, 0x220d},
		{"odd length", []byte{0x01}, 0xfeff},
		{"carry folds", []byte{0xff, 0xff, 0x00, 0x01}, 0xfffe},
		// The IPv4 header example of Wikipedia's "Internet checksum" article,
		// checksum field zeroed.
		{"ipv4 header", []byte{
			0x45, 0x00, 0x00, 0x73, 0x00, 0x00, 0x40, 0x00, 0x40, 0x11,
			0x00, 0x00, 0xc0, 0xa8, 0x00, 0x01, 0xc0, 0xa8, 0x00, 0xc7,
		}, 0xb861},
		{"echo request", echoRequestV4, 0}, // a message with its checksum sums to zero
	} {
		if got := checksum(tc.in); got != tc.want {
			t.Errorf("%s: checksum = %#04x, want %#04x", tc.name, got, tc.want)
		}
	}
}

var (
	testCookie = cookie{0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07, 0x08}
	testSent   = time.Unix(1700000000, 123456789)
)

// testPayload is the payload of echo requests with testCookie sent at testSent.
var testPayload = []byte{
	0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07, 0x08, // cookie
	0x17, 0x97, 0x9c, 0xfe, 0x3d, 0x85, 0xcd, 0x15, // 1700000000123456789 ns
	0x10, 0x11, 0x12, 0x13, 0x14, 0x15, 0x16, 0x17, // filler: payload offset
	0x18, 0x19, 0x1a, 0x1b, 0x1c, 0x1d, 0x1e, 0x1f,
	0x20, 0x21, 0x22, 0x23, 0x24, 0x25, 0x26, 0x27,
	0x28, 0x29, 0x2a, 0x2b, 0x2c, 0x2d, 0x2e, 0x2f,
	0x30, 0x31, 0x32, 0x33, 0x34, 0x35, 0x36, 0x37,
}

var (
	// Echo request id 0x1234 seq 7; checksum computed independently.
	echoRequestV4 = cat([]byte{0x08, 0x00, 0x57, 0xad, 0x12, 0x34, 0x00, 0x07}, testPayload)
	// The kernel fills in the ICMPv6 checksum.
	echoRequestV6 = cat([]byte{0x80, 0x00, 0x00, 0x00, 0x12, 0x34, 0x00, 0x07}, testPayload)

	echoReplyV4 = cat([]byte{0x00, 0x00, 0x5f, 0xad, 0x12, 0x34, 0x00, 0x07}, testPayload)
	// Checksum not verified for ICMPv6.
	echoReplyV6 = cat([]byte{0x81, 0x00, 0xbe, 0xef, 0x12, 0x34, 0x00, 0x07}, testPayload)

	// 127.0.0.1 -> 127.0.0.1, TTL 64, ICMP; the IP checksum is not checked.
	ipv4Header = []byte{
		0x45, 0x00, 0x00, 0x54, 0xab, 0xcd, 0x00, 0x00, 0x40, 0x01,
		0x00, 0x00, 0x7f, 0x00, 0x00, 0x01, 0x7f, 0x00, 0x00, 0x01,
	}
	// IHL 6: one word of options, NOP NOP NOP EOL; TTL 3.
	ipv4HeaderOptions = []byte{
		0x46, 0x00, 0x00, 0x58, 0xab, 0xcd, 0x00, 0x00, 0x03, 0x01,
		0x00, 0x00, 0x7f, 0x00, 0x00, 0x01, 0x7f, 0x00, 0x00, 0x01,
		0x01, 0x01, 0x01, 0x00,
	}
)

func cat(bs ...[]byte) []byte { return bytes.Join(bs, nil) }

// parsed fails t unless err matches wantErr, or is nil when wantErr is,
// and says whether the parse succeeded: then the caller checks what it
// returned.
func parsed(t *testing.T, err, wantErr error) bool {
	t.Helper()
	if wantErr != nil {
		if !errors.Is(err, wantErr) {
			t.Fatalf("error %v, want %v", err, wantErr)
		}
		return false
	}
	if err != nil {
		t.Fatal(err)
	}
	return true
}

func TestMarshalEchoRequest(t *testing.T) {
	if got := marshalEchoRequest(false, 0x1234, 7, testCookie, testSent, payloadLen); !bytes.Equal(got, echoRequestV4) {
		t.Errorf("ipv4 echo request:\n got %x\nwant %x", got, echoRequestV4)
	}
	if got := marshalEchoRequest(true, 0x1234, 7, testCookie, testSent, payloadLen); !bytes.Equal(got, echoRequestV6) {
		t.Errorf("ipv6 echo request:\n got %x\nwant %x", got, echoRequestV6)
	}
}

func TestParseEcho(t *testing.T) {
	e, err := parseEcho(echoRequestV4)
	if err != nil {
		t.Fatal(err)
	}
	if e.Type != 8 || e.Code != 0 || e.Checksum != 0x57ad || e.ID != 0x1234 || e.Seq != 7 || !bytes.Equal(e.Payload, testPayload) {
		t.Errorf("parseEcho = %+v, want type 8 code 0 checksum 0x57ad id 0x1234 seq 7 payload %x", e, testPayload)
	}
	if _, err := parseEcho(echoRequestV4[:7]); !errors.Is(err, errTruncated) {
		t.Errorf("parseEcho(7 bytes) error = %v, want %v", err, errTruncated)
	}
}

func TestParseReply(t *testing.T) {
	other := cookie{0xff, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07, 0x08}
	badChecksum := cat(echoReplyV4)
	badChecksum[len(badChecksum)-1] ^= 0xff

	for _, tc := range []struct {
		name    string
		v6      bool
		pkt     []byte
		id      uint16
		cookie  cookie
		want    parsedReply
		wantErr error
	}{
		{"v4", false, cat(ipv4Header, echoReplyV4), 0x1234, testCookie, parsedReply{Seq: 7, TTL: 64, Size: 64}, nil},
		{"v4 ip options", false, cat(ipv4HeaderOptions, echoReplyV4), 0x1234, testCookie, parsedReply{Seq: 7, TTL: 3, Size: 64}, nil},
		{"v6", true, echoReplyV6, 0x1234, testCookie, parsedReply{Seq: 7, Size: 64}, nil},

		{"v4 cookie mismatch", false, cat(ipv4Header, echoReplyV4), 0x1234, other, parsedReply{}, errForeignRun},
		{"v6 cookie mismatch", true, echoReplyV6, 0x1234, other, parsedReply{}, errForeignRun},
		{"v4 foreign id", false, cat(ipv4Header, echoReplyV4), 0x4321, testCookie, parsedReply{}, errForeignID},
		{"v6 foreign id", true, echoReplyV6, 0x4321, testCookie, parsedReply{}, errForeignID},
		{"v4 echo request", false, cat(ipv4Header, echoRequestV4), 0x1234, testCookie, parsedReply{}, errNotEchoReply},
		{"v6 echo request", true, echoRequestV6, 0x1234, testCookie, parsedReply{}, errNotEchoReply},
		{"v4 reply parsed as v6", true, echoReplyV4, 0x1234, testCookie, parsedReply{}, errNotEchoReply},
		{"v4 bad checksum", false, cat(ipv4Header, badChecksum), 0x1234, testCookie, parsedReply{}, errChecksum},
		{"v4 ihl below 5", false, cat([]byte{0x44}, ipv4Header[1:], echoReplyV4), 0x1234, testCookie, parsedReply{}, errMalformed},
		{"v4 not ip version 4", false, cat([]byte{0x65}, ipv4Header[1:], echoReplyV4), 0x1234, testCookie, parsedReply{}, errMalformed},
		{"v4 ihl beyond packet", false, cat([]byte{0x4f}, ipv4Header[1:], echoReplyV4[:30]), 0x1234, testCookie, parsedReply{}, errTruncated},
		{"v4 no payload", false, cat(ipv4Header, echoReplyV4[:8]), 0x1234, testCookie, parsedReply{}, errTruncated},
		{"v6 short payload", true, echoReplyV6[:63], 0x1234, testCookie, parsedReply{}, errTruncated},
		{"empty", false, nil, 0x1234, testCookie, parsedReply{}, errTruncated},
		{"v6 empty", true, nil, 0x1234, testCookie, parsedReply{}, errTruncated},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := parseReply(tc.v6, tc.pkt, tc.id, tc.cookie, payloadLen)
			if !parsed(t, err, tc.wantErr) {
				return
			}
			if got != tc.want {
				t.Errorf("parseReply = %+v, want %+v", got, tc.want)
			}
		})
	}
}

// Every strict prefix of a valid reply is rejected, without panicking.
func TestParseReplyTruncated(t *testing.T) {
	for _, tc := range []struct {
		name string
		v6   bool
		pkt  []byte
	}{
		{"v4", false, cat(ipv4Header, echoReplyV4)},
		{"v4 ip options", false, cat(ipv4HeaderOptions, echoReplyV4)},
		{"v6", true, echoReplyV6},
	} {
		for n := range len(tc.pkt) {
			if _, err := parseReply(tc.v6, tc.pkt[:n], 0x1234, testCookie, payloadLen); err == nil {
				t.Errorf("%s: parseReply accepted the first %d of %d bytes", tc.name, n, len(tc.pkt))
			}
		}
	}
}

// FuzzParseReply checks that garbage never panics, and that anything accepted
// really carries our id and cookie.
func FuzzParseReply(f *testing.F) {
	f.Add(false, cat(ipv4Header, echoReplyV4))
	f.Add(false, cat(ipv4HeaderOptions, echoReplyV4))
	f.Add(true, echoReplyV6)
	f.Add(false, []byte{0x4f, 0xff})
	f.Add(true, []byte{0x81})
	f.Fuzz(func(t *testing.T, v6 bool, pkt []byte) {
		r, err := parseReply(v6, pkt, 0x1234, testCookie, payloadLen)
		if err != nil {
			return
		}
		if r.Size < messageLen || r.Size > len(pkt) {
			t.Fatalf("accepted reply of size %d from %d bytes", r.Size, len(pkt))
		}
		msg := pkt[len(pkt)-r.Size:]
		if e, _ := parseEcho(msg); e.ID != 0x1234 || !bytes.Equal(e.Payload[:cookieLen], testCookie[:]) {
			t.Fatalf("accepted reply %x with id %#x", msg, e.ID)
		}
	})
}

func TestParseError(t *testing.T) {
	otherCookie := cat(echoRequestV4)
	otherCookie[8] ^= 0xff
	for _, tc := range []struct {
		name    string
		v6      bool
		pkt     []byte
		want    ICMPError
		wantErr error
	}{
		{"v4 port unreachable", false, cat(ipv4Header, errorV4(3, 3, 0, ipv4Header, echoRequestV4)), ICMPError{Type: 3, Code: 3}, nil},
		{"v4 admin prohibited", false, cat(ipv4Header, errorV4(3, 13, 0, ipv4Header, echoRequestV4)), ICMPError{Type: 3, Code: 13}, nil},
		{"v4 frag needed keeps the mtu", false, cat(ipv4Header, errorV4(3, 4, 1280, ipv4HeaderOptions, echoRequestV4)), ICMPError{Type: 3, Code: 4, MTU: 1280}, nil},
		{"v4 ttl exceeded quoting 8 bytes", false, cat(ipv4Header, errorV4(11, 0, 0, ipv4Header, echoRequestV4[:8])), ICMPError{Type: 11}, nil},
		{"v4 quote of another run", false, cat(ipv4Header, errorV4(3, 1, 0, ipv4Header, otherCookie)), ICMPError{}, errForeignRun},
		{"v4 quote of a reply", false, cat(ipv4Header, errorV4(3, 1, 0, ipv4Header, echoReplyV4)), ICMPError{}, errNotEchoReply},
		{"v4 quote cut in the header", false, cat(ipv4Header, errorV4(3, 1, 0, ipv4Header, nil))[:40], ICMPError{}, errMalformed},
		{"v6 no route", true, errorV6(1, 0, 0, echoRequestV6), ICMPError{Type: 1, Code: 0}, nil},
		{"v6 packet too big", true, errorV6(2, 0, 1280, echoRequestV6), ICMPError{Type: 2, MTU: 1280}, nil},
		{"v6 hop limit exceeded", true, errorV6(3, 0, 0, echoRequestV6), ICMPError{Type: 3}, nil},
		{"v6 other id", true, errorV6(1, 0, 0, cat(echoRequestV6[:4], []byte{0x12, 0x35}, echoRequestV6[6:])), ICMPError{}, errForeignID},
		{"v6 redirect", true, errorV6(137, 0, 0, echoRequestV6), ICMPError{}, errNotICMPError},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r, err := parseError(tc.v6, tc.pkt, 0x1234, testCookie)
			if !parsed(t, err, tc.wantErr) {
				return
			}
			if r.Seq != 7 || r.Error == nil || *r.Error != tc.want {
				t.Errorf("parseError = seq %d, %+v; want seq 7, %+v", r.Seq, r.Error, tc.want)
			}
		})
	}
}

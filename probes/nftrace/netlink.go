package nftrace

import (
	"encoding/binary"
	"fmt"
	"time"

	"github.com/mdlayher/netlink"
	"golang.org/x/sys/unix"
)

// nftGet sends an nf_tables get request, msgType of NFT_MSG_*, for family on
// c (flags may add netlink.Dump) and returns the replies.
func nftGet(c *netlink.Conn, msgType uint16, flags netlink.HeaderFlags, family uint8) ([]netlink.Message, error) {
	if err := c.SetReadDeadline(time.Now().Add(batchTimeout)); err != nil {
		return nil, err
	}
	return c.Execute(netlink.Message{
		Header: netlink.Header{
			Type:  netlink.HeaderType(unix.NFNL_SUBSYS_NFTABLES<<8 | msgType),
			Flags: netlink.Request | flags,
		},
		Data: []byte{family, unix.NFNETLINK_V0, 0, 0}, // struct nfgenmsg
	})
}

// nfAttributes returns a decoder of the attributes of an nf_tables message
// payload b (after struct nlmsghdr), which follow its struct nfgenmsg and are
// big-endian; a payload too short for the nfgenmsg is errShortMessage.
func nfAttributes(b []byte) (*netlink.AttributeDecoder, error) {
	if len(b) < nfgenMsgLen {
		return nil, fmt.Errorf("message of %d bytes: %w", len(b), errShortMessage)
	}
	ad, err := netlink.NewAttributeDecoder(b[nfgenMsgLen:])
	if err != nil {
		return nil, err
	}
	ad.ByteOrder = binary.BigEndian
	return ad, nil
}

// Package nftrace is the netfilter source for kernels without kprobes: it marks our echo with
// nftables' nftrace from a temporary table in each network namespace and turns the kernel's
// NFT_MSG_TRACE messages into decode.NetfilterEvents.
package nftrace

// Package ping sends the probes: ICMP and ICMPv6 echo requests with one echo id per run, TCP
// SYNs marked by their sequence numbers, or UDP datagrams marked in their payloads, and receives
// only the answers to that run: through kernel socket filters, and by the marks.
package ping

// Package ping sends the probes: ICMP and ICMPv6 echo requests with one echo id per run, or
// TCP SYNs marked by their sequence numbers, and, through kernel socket filters, receives
// only the answers to that run.
package ping

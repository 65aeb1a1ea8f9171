// Package ping is the built-in pinger: it sends ICMP and ICMPv6 echo requests
// with one echo id per run and, through a kernel socket filter, receives only
// the replies to that id.
package ping

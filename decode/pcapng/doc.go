// Package pcapng exports hop records as a pcapng file for Wireshark and
// tshark: one interface per (network namespace, device), one packet per hop.
package pcapng

// Package hint reads, in the network namespace where a packet was lost, the
// state that explains the loss (route lookup, forwarding and rp_filter
// sysctls, neighbour entry, link state and MTU) and says it in one line.
package hint

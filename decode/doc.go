// Package decode turns raw probe records into events and echo journeys: the
// record layout the BPF programs write, the netfilter model, and the snapshot
// of namespaces a run shows. It is pure: nothing here touches the kernel.
package decode

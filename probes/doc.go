// Package probes turns the running kernel into a source of packet records:
// BTF offsets, BPF programs built from them, their attachment to tracepoints
// and kprobes, and the per-CPU rings the records are read from.
package probes

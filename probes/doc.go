// Package probes turns the running kernel into a source of packet records:
// BTF offsets, BPF programs built from them, perf events, and the rings the
// records are read from.
package probes

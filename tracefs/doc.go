// Package tracefs finds (or mounts) the kernel's tracing filesystem and reads
// event ids and formats from it, and creates and removes the kprobe groups
// of a run.
package tracefs

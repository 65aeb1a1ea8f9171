// Package tracefs finds (or mounts) the kernel's tracing filesystem and reads
// event ids and formats from it.
package tracefs

// Package decode turns raw probe records into events and echo journeys. It is
// pure: nothing here touches the kernel, so live runs and replays share it.
package decode

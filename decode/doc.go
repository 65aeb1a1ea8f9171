// Package decode turns raw probe records into events and echo journeys, and
// reads and writes them as .tpk recordings (and pcapng). It is pure: nothing
// here touches the kernel, so live runs and replays share it.
package decode

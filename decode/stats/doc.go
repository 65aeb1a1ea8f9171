// Package stats summarises many echoes and compares two runs: per-hop latency
// percentiles, losses, drops and verdicts, grouped by the path each echo took,
// and the hop-by-hop alignment of two runs by names, never by inode. It is pure.
package stats

// Package tpk reads and writes .tpk recordings: the records, snapshots and
// echo outcomes of a live run, framed in checksummed blocks, so that a replay
// feeds them to the same decoder and renderer anywhere, without root.
package tpk

// Package testrecord builds the records, packets and snapshot of a demo run
// (a bridge, a veth pair, a container namespace) for the tests of the
// recording, replay and export code.
package testrecord

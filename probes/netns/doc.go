// Package netns finds the network namespaces the tool can reach, runs code
// inside them, and describes them (names, processes, interfaces) for a run's
// snapshot.
package netns

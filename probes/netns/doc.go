// Package netns finds the network namespaces the tool can reach and runs
// code inside them.
package netns

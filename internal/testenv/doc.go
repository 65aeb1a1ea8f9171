// Package testenv holds the small helpers tests share: one place that decides skips (a
// failure instead when CI=true), topologies torn down with the test, and independent views
// of namespaces and processes to check them against.
package testenv

// Package caps reads the capabilities this process holds and names, for a
// privileged operation that failed, the capabilities it lacks.
package caps

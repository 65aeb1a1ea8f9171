// Command tracepkt-vmtest boots a kernel under QEMU and runs commands (usually
// test binaries) inside it, exiting with the first failing command's status.
package main

// Package vmtest boots a kernel under QEMU with the host's root shared read-only,
// runs commands inside that guest, and reports their exit statuses; its own
// guest test checks the capabilities (kprobes, netfilter modules) later tests rely on.
package vmtest

# Kernel-matrix tests: run test binaries inside a QEMU guest (see cmd/tracepkt-vmtest).
# Included from the main Makefile; `make -f vmtest.mk test-vm` works on its own too.
#   make test-vm KERNEL=/boot/vmlinuz-6.1.0-56-amd64 VM_TEST_PKGS="./internal/vmtest ./probes"

# Packages whose test binaries run in the guest, each in its own package directory as go test would.
VM_TEST_PKGS ?= ./internal/vmtest
# Kernel to boot; empty means the newest /boot/vmlinuz-*.
KERNEL ?=
VM_TIMEOUT ?= 15m
VM_TEST_FLAGS ?= -test.v

# ./internal/vmtest -> internal_vmtest.test
vm_test_bin = $(subst /,_,$(patsubst ./%,%,$(1))).test

.PHONY: test-vm
test-vm:
	CGO_ENABLED=0 go build -o bin/tracepkt-vmtest ./cmd/tracepkt-vmtest
	mkdir -p .vmtest
	set -e; $(foreach p,$(VM_TEST_PKGS),go test -c -o .vmtest/$(call vm_test_bin,$(p)) $(p);)
	bin/tracepkt-vmtest $(if $(KERNEL),-kernel $(KERNEL)) -timeout $(VM_TIMEOUT) -workdir $(CURDIR) \
		$(foreach p,$(VM_TEST_PKGS),-- env -C $(p) $(CURDIR)/.vmtest/$(call vm_test_bin,$(p)) $(VM_TEST_FLAGS))

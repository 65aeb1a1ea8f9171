# Kernel-matrix tests: run test binaries inside a QEMU guest (see cmd/tracepkt-vmtest).
# Included from the main Makefile; `make -f vmtest.mk test-vm` works on its own too.
#   make test-vm KERNEL=/boot/vmlinuz-6.1.0-56-amd64 VM_TEST_PKGS="./internal/vmtest ./probes"

# Packages whose test binaries run in the guest, each in its own package directory as go test would.
VM_TEST_PKGS ?= ./internal/vmtest
# Kernel to boot; empty means the newest /boot/vmlinuz-*. One at
# <root>/boot/vmlinuz-* finds its modules in <root>/lib/modules.
KERNEL ?=
# Older Debian releases whose kernel the matrix boots too: make deps unpacks
# each one's linux-image-amd64 into $(VM_KERNEL_CACHE)/<suite>, never
# installing it (internal/vmtest/fetch-debian-kernel.sh).
VM_DEBIAN_SUITES ?= bullseye
VM_KERNEL_CACHE ?= /var/cache/tracepkt-perf
VM_TIMEOUT ?= 60m
VM_TEST_FLAGS ?= -test.v
# Each test binary in a guest stops after this long, naming the tests still
# running: a hang fails fast instead of waiting out VM_TIMEOUT. The cmd
# package takes close to 30 minutes in the emulated 5.10 guest.
VM_TEST_TIMEOUT ?= 40m
# Where test-vm keeps each guest's output (the main Makefile reads it for skips).
TEST_LOGS ?= $(CURDIR)/.vmtest/logs
SHELL := /bin/bash
.SHELLFLAGS := -o pipefail -c

# ./internal/vmtest -> internal_vmtest.test
vm_test_bin = $(subst /,_,$(patsubst ./%,%,$(1))).test
# What the guest's tests leave for the host (recordings made on its kernel),
# replayed on the host after a run of the whole cmd package (a run that picks
# tests with -test.run may not have recorded).
VM_FILES = $(CURDIR)/.vmtest/files/$(if $(KERNEL),$(notdir $(KERNEL)),newest)

.PHONY: test-vm vm-bins vm-guest
# One guest: build, then boot KERNEL and run the packages' tests in it.
test-vm: vm-bins
	$(vm_guest)

# The runner and the test binaries every guest runs.
vm-bins:
	CGO_ENABLED=0 go build -o bin/tracepkt-vmtest ./cmd/tracepkt-vmtest
	mkdir -p .vmtest
	set -e; $(foreach p,$(VM_TEST_PKGS),go test -c -o .vmtest/$(call vm_test_bin,$(p)) $(p);)

# One guest with what vm-bins built: the kernel matrix runs several at once
# (internal/vmtest/run-matrix.sh), after building once.
vm-guest:
	$(vm_guest)

define vm_guest
mkdir -p $(TEST_LOGS)
bin/tracepkt-vmtest $(if $(KERNEL),-kernel $(KERNEL)) -timeout $(VM_TIMEOUT) -workdir $(CURDIR) -files $(VM_FILES) \
	$(foreach p,$(VM_TEST_PKGS),-- env -C $(p) $(CURDIR)/.vmtest/$(call vm_test_bin,$(p)) $(VM_TEST_FLAGS) -test.timeout=$(VM_TEST_TIMEOUT)) \
	2>&1 | tee $(TEST_LOGS)/$(if $(KERNEL),$(notdir $(KERNEL)),newest).log
$(if $(and $(filter ./cmd/tracepkt-perf,$(VM_TEST_PKGS)),$(if $(findstring -test.run,$(VM_TEST_FLAGS)),,yes)),env -C cmd/tracepkt-perf TRACEPKT_GUEST_RECORDINGS=$(VM_FILES)/recordings \
	$(CURDIR)/.vmtest/cmd_tracepkt-perf.test $(VM_TEST_FLAGS) -test.run '^TestReplayGuestRecordings$$')
endef

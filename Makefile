# tracepkt-perf: `make demo` builds and traces into a throwaway topology,
# `make test` runs every test (unit, root end-to-end, and the kernel matrix
# under QEMU). Both need root.

GO ?= go
export CGO_ENABLED := 0
# Recipes that pipe a test run into tee keep the run's exit status.
SHELL := /bin/bash
.SHELLFLAGS := -o pipefail -c
# Verbose output of each suite (host, one per guest kernel), read for the skips.
TEST_LOGS := $(CURDIR)/.vmtest/logs
BIN := bin/tracepkt-perf

# Debian packages the tests and the demo use; `make deps` installs the missing ones.
DEB_PACKAGES := iproute2 iputils-ping nftables iptables tshark qemu-system-x86 busybox-static cpio xz-utils zstd gcc libc6-dev librsvg2-bin groff-base kmod \
	linux-image-amd64 linux-image-6.12-amd64 podman runc conntrack

# Root test packages that also run inside the distro kernel.
VM_TEST_PKGS := ./internal/vmtest ./cmd/tracepkt-perf ./probes/ping ./internal/topology ./probes/nftrace ./probes ./probes/netns
# Tests that check no kernel behaviour of their own (statistics and pictures over
# recordings, manual pages) and take minutes under TCG run on the host only.
# The leak test runs in the guests in the kprobe mode alone; the host firewall
# cases, which repeat the core cases, and the capability sets, measured with
# the tracefs a fresh machine lacks and without kprobes, and the signals during
# a host name lookup (no kernel behaviour: 100 s under TCG), on the host only.
VM_TEST_FLAGS := -test.v -test.skip='^(TestE2EUnderHostFirewall|TestE2ECapabilities|TestE2EInterruptedBeforeFirstEcho|TestE2EStats|TestStatsRouter|TestStatsReroute|TestDiff|TestSVG|TestReplayPeakRSS|TestReplayTableCostPerEcho|TestManPageRenders|TestManualPages)$$'

.PHONY: all build install uninstall demo test test-host test-matrix skips bench deps lint clean
all: build

build:
	$(GO) build -trimpath -o $(BIN) ./cmd/tracepkt-perf

# make install [PREFIX=/usr/local] [DESTDIR=]: the static binary, the man page
# tracepkt-perf(8) and the bash completion, both generated from the --help
# text (go test ./cmd/tracepkt-perf -update writes them again).
PREFIX ?= /usr/local
INSTALL_FILES := $(DESTDIR)$(PREFIX)/bin/tracepkt-perf $(DESTDIR)$(PREFIX)/share/man/man8/tracepkt-perf.8 \
	$(DESTDIR)$(PREFIX)/share/bash-completion/completions/tracepkt-perf

install: build
	install -D -m 0755 $(BIN) $(DESTDIR)$(PREFIX)/bin/tracepkt-perf
	install -D -m 0644 docs/tracepkt-perf.8 $(DESTDIR)$(PREFIX)/share/man/man8/tracepkt-perf.8
	install -D -m 0644 completions/tracepkt-perf.bash $(DESTDIR)$(PREFIX)/share/bash-completion/completions/tracepkt-perf

uninstall:
	rm -f $(INSTALL_FILES)

demo: build
	./$(BIN) --demo

deps:
	@missing=$$(for p in $(DEB_PACKAGES); do \
		dpkg-query -W -f='$${Status}\n' $$p 2>/dev/null | grep -q 'install ok installed' || echo $$p; done); \
	if [ -n "$$missing" ]; then \
		echo "installing Debian packages:" $$missing; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
	fi
	@for s in $(VM_DEBIAN_SUITES); do sh internal/vmtest/fetch-debian-kernel.sh $$s $(VM_KERNEL_CACHE)/$$s || exit 1; done

lint:
	$(GO) vet ./...
	@out=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go')); \
	if [ -n "$$out" ]; then echo "gofmt would change: $$out"; exit 1; fi

# Unit tests and root end-to-end tests on the running kernel, under the race
# detector (which needs cgo; the binaries stay static). The end-to-end tests
# run the test binary as the tool, so the tool itself runs under it too. They
# run in a mount namespace of their own with every tracefs unmounted, as on a
# freshly booted machine: a mount left by an earlier run can never help them.
test-host: build
	mkdir -p $(TEST_LOGS)
	unshare --mount --propagation private sh -c 'grep -w tracefs /proc/self/mounts | while read -r _ dir _; do umount -l "$$dir"; done; exec "$$@"' sh \
		env CGO_ENABLED=1 $(GO) test -race -count=1 -p 1 -timeout 40m -v ./... 2>&1 | tee $(TEST_LOGS)/host.log | grep -v -E '^(=== (RUN|PAUSE|CONT|NAME)|\s+--- PASS|--- PASS)'

# The kernel matrix: the root tests inside every Debian amd64 kernel in /boot
# (make deps installs 6.1 and 6.12) and in $(VM_KERNEL_CACHE) (make deps
# unpacks 5.10 there), one guest boot per kernel, VM_JOBS guests at a time
# (each keeps one CPU busy). Listed when the recipe runs, since make deps
# may have just installed them.
VM_JOBS ?= $(shell nproc)
test-matrix: vm-bins
	@kernels=$$(ls /boot/vmlinuz-*-amd64 $(VM_KERNEL_CACHE)/*/boot/vmlinuz-*-amd64 2>/dev/null); \
	if [ -z "$$kernels" ]; then echo "no distro kernel in /boot for the matrix: run make deps"; exit 1; fi; \
	bash internal/vmtest/run-matrix.sh $(VM_JOBS) .vmtest/out $$kernels

test: deps lint
	rm -rf $(TEST_LOGS)
	$(MAKE) --no-print-directory test-host test-matrix; status=$$?; $(MAKE) --no-print-directory skips; exit $$status

# Every test that skipped, with its reason, on the host and in each guest,
# in two lists: the gaps (none on a complete machine), and the tests the
# other suite runs by design (the kprobe tests on a kernel without kprobes,
# the guest-only tests on the host), whose reason starts with
# testenv.ElsewherePrefix. A test's reason is the last log line under its
# "=== RUN" (or CONT, NAME) line: verbose output prints a subtest's
# "--- SKIP" line later, with its parent's result.
skips:
	@awk 'FNR == 1 { delete reason; cur = "" } /^=== (RUN|CONT|NAME) / { cur = $$3 } \
		/^[ \t]+[^ \t]+\.go:[0-9]+: / && cur != "" { r = $$0; sub(/^[ \t]+/, "", r); reason[cur] = r } \
		/--- SKIP: / { f = FILENAME; sub(/.*\//, "", f); sub(/\.log$$/, "", f); line = "  " f ": " $$3 ": " reason[$$3] "\n"; \
			if (index(reason[$$3], ": runs elsewhere by design: ")) away = away line; else gaps = gaps line } \
		END { printf "skipped tests (host and each guest):\n%s", gaps ? gaps : "  none\n"; \
			printf "run by the other suite by design:\n%s", away ? away : "  none\n" }' $(wildcard $(TEST_LOGS)/*.log) /dev/null

# Every cost of the tool (cmd/tracepkt-bench): prints each table and writes
# BENCHMARKS.md. BENCH_FLAGS passes flags, e.g. -sections answer,flood or
# -lock FILE on a machine shared with other root test runs. Then what naming
# namespaces costs at start-up with 100 of them.
BENCH_FLAGS ?=
bench: build
	$(GO) build -o bin/tracepkt-bench ./cmd/tracepkt-bench
	$(GO) build -o bin/tracepkt-vmtest ./cmd/tracepkt-vmtest
	bin/tracepkt-bench -tool $(BIN) $(BENCH_FLAGS)
	$(GO) test -run '^$$' -bench Naming100 ./probes/netns

clean:
	rm -rf bin .vmtest

include vmtest.mk

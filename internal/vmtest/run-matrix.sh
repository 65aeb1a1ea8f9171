#!/usr/bin/env bash
# run-matrix.sh JOBS OUTDIR KERNEL...: the kernel matrix, up to JOBS guests
# at a time (each guest's vCPUs share one host thread, see qemuArgs, so a
# guest keeps one CPU busy). Each guest is `make vm-guest KERNEL=...`, with
# the test binaries `make vm-bins` built. Its output goes to
# OUTDIR/<kernel>.out and is printed whole when the guest ends, so guests
# side by side never interleave their lines. The oldest kernel starts first:
# it has been the slowest. Every guest runs even when one fails; the exit
# status is 1 if any failed.
set -u
jobs=$1 out=$2
shift 2
mkdir -p "$out"
declare -A kernel_of=() started=()
failed=()

# Waits for one guest to end and prints its output.
reap() {
	local pid rc k
	wait -n -p pid
	rc=$?
	k=${kernel_of[$pid]}
	cat "$out/$(basename "$k").out"
	if [ "$rc" -eq 0 ]; then
		echo "matrix: $(basename "$k") passed in $((SECONDS - started[$pid]))s"
	else
		echo "matrix: $(basename "$k") FAILED (exit $rc) after $((SECONDS - started[$pid]))s"
		failed+=("$(basename "$k")")
	fi
	unset "kernel_of[$pid]"
}

for k in $(for k in "$@"; do echo "$(basename "$k") $k"; done | sort -V | cut -d' ' -f2); do
	while [ "${#kernel_of[@]}" -ge "$jobs" ]; do reap; done
	echo "matrix: $(basename "$k") starts"
	${MAKE:-make} --no-print-directory vm-guest KERNEL="$k" >"$out/$(basename "$k").out" 2>&1 </dev/null &
	kernel_of[$!]=$k
	started[$!]=$SECONDS
done
while [ "${#kernel_of[@]}" -gt 0 ]; do reap; done
echo "matrix: $# guest(s), ${SECONDS}s in all"
if [ "${#failed[@]}" -gt 0 ]; then
	echo "matrix: failed: ${failed[*]}"
	exit 1
fi

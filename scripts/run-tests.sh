#!/bin/bash
# Runs every test: the whole suite in the normal build, then the library
# suite under ASan+UBSan and under TSan. Ends with "N passed, N failed".
# Needs root (userfaultfd on every memory type, the hugetlb pool). The VM
# tests run on TCG everywhere and on KVM too where /dev/kvm is usable.
set -uo pipefail
cd "$(dirname "$0")/.."

pass=0
fail=0
accel_line=

die() {
	echo "run-tests: $*" >&2
	# the summary stays the last line, after the accelerators
	[ -z "$accel_line" ] || echo "$accel_line"
	echo "$pass passed, $((fail + 1)) failed"
	exit 1
}

# Which accelerators the VM tests run on: TCG (an emulated vCPU) needs
# nothing from the host; KVM needs /dev/kvm, readable and writable. The
# list goes to meson as option test_accels.
accels=tcg
if [ ! -e /dev/kvm ]; then
	accel_line="accelerators: tcg (kvm: not present)"
elif [ -c /dev/kvm ] && [ -r /dev/kvm ] && [ -w /dev/kvm ]; then
	accels=tcg,kvm
	accel_line="accelerators: tcg kvm"
else
	accel_line="accelerators: tcg (kvm: /dev/kvm not accessible)"
fi
echo "$accel_line"

# Everything here stands on userfaultfd: without it every test would fail
# for the same reason, so check it once and say so. Root gets the plain
# syscall (number 323 on x86-64), faults from the kernel included.
[ "$(uname -m)" = x86_64 ] ||
	die "x86-64 only: the VMM, its guest and the userfaultfd check are"
[ "$(id -u)" = 0 ] ||
	die "needs root: userfaultfd on every memory type, the hugetlb pool"
uffd=$(python3 -c '
import ctypes, os, sys
libc = ctypes.CDLL(None, use_errno=True)
fd = libc.syscall(323, os.O_CLOEXEC | os.O_NONBLOCK)
if fd < 0:
    sys.exit("userfaultfd(O_CLOEXEC|O_NONBLOCK): "
             + os.strerror(ctypes.get_errno()))
os.close(fd)
' 2>&1) || die "userfaultfd is not available, nothing can pass: $uffd"

# The hugetlb pool (2 MiB pages). Tests map hugetlb memory while others
# run beside them, and a hugetlb mmap fails at once (ENOMEM) when the pool
# is short. Each test grows the pool itself when short, under a lock
# (tests/hugetlb_pool.h); sizing it once here, for the most that tests may
# hold at the same time, keeps it fixed during the run, and a machine that
# cannot give that much fails here, loudly, not in some test. In pages:
#   suite lib, all at once: engine-ctx 4, engine-exact 8, engine-fail 8,
#     engine-restore 8, engine-delta 8, engine-kernel 4, engine-discard 4,
#     engine-process 4, format-roundtrip 4: 52
#   vm-mem-*, snap-exact-* (128 MiB of guest RAM; they run alone): 64
# the larger, plus 16 spare. Pages reserved elsewhere on the machine are
# not counted as ours. The pool is left as it is afterwards: that is only
# memory set aside, and the next run wants it again.
HUGE_PAGES=80
pool=/sys/kernel/mm/hugepages/hugepages-2048kB
[ -r $pool/free_hugepages ] ||
	die "no 2 MiB hugetlb pool ($pool): the tests need hugetlbfs"
# the same lock as the tests: a test of another run may be mapping
exec 9>/run/livesnap-hugetlb.lock && flock 9 ||
	die "cannot take the hugetlb pool lock /run/livesnap-hugetlb.lock"
avail=$(($(cat $pool/free_hugepages) - $(cat $pool/resv_hugepages)))
if [ "$avail" -lt "$HUGE_PAGES" ]; then
	echo $(($(cat $pool/nr_hugepages) + HUGE_PAGES - avail)) \
		>$pool/nr_hugepages
	avail=$(($(cat $pool/free_hugepages) - $(cat $pool/resv_hugepages)))
fi
exec 9>&-
[ "$avail" -ge "$HUGE_PAGES" ] ||
	die "the kernel gave $avail of the $HUGE_PAGES free 2 MiB huge pages the tests need (memory short or fragmented)"
echo "hugetlb pool: $(cat $pool/nr_hugepages) pages of 2 MiB, $avail available"

# setup BUILD_DIR [meson options...]: configures (again, if configured
# before: the options, and what 'auto' options find, may have changed
# since), then builds.
setup() {
	local dir=$1
	shift
	if [ ! -f "$dir/build.ninja" ]; then
		meson setup "$dir" "$@" >"$dir.setup.log" 2>&1 ||
			{ cat "$dir.setup.log"; die "meson setup $dir failed"; }
	else
		meson setup --reconfigure "$dir" "$@" >"$dir.setup.log" 2>&1 ||
			{ cat "$dir.setup.log"; die "meson setup --reconfigure $dir failed"; }
	fi
	ninja -C "$dir" >"$dir.ninja.log" 2>&1 ||
		{ tail -50 "$dir.ninja.log"; die "build in $dir failed"; }
}

# run BUILD_DIR [meson test options...]: adds the counts to pass/fail
run() {
	local dir=$1
	shift
	meson test -C "$dir" --print-errorlogs "$@" 2>&1 | tee "$dir.test.log"
	local ok nok
	ok=$(grep -E '^Ok:' "$dir.test.log" | awk '{print $2}')
	nok=$(grep -E '^(Fail|Unexpected Pass|Timeout):' "$dir.test.log" |
		awk '{s += $2} END {print s + 0}')
	[ -n "$ok" ] || die "meson test in $dir printed no summary"
	pass=$((pass + ok))
	fail=$((fail + nok))
	grep -qE '^Skipped:\s+[1-9]' "$dir.test.log" && {
		echo "run-tests: tests were skipped in $dir: a skip is a failure here" >&2
		fail=$((fail + $(grep -E '^Skipped:' "$dir.test.log" | awk '{print $2}')))
	}
	return 0
}

# werror is off by default (a user's newer compiler may warn anew); here
# every warning is an error.
setup build -Dwerror=true -Dtest_accels="$accels" -Dfuzz=enabled
run build

# The library, the VMM and the command build with clang too, warnings as
# errors (built only: the gcc build above runs the tests).
CC=clang-14 setup build-clang -Dwerror=true -Dtests=false -Dbench=false \
	-Dfuzz=disabled
echo "clang build: ok"

if [ "${LS_SKIP_SANITIZERS:-0}" != 1 ]; then
	setup build-asan -Dwerror=true -Db_sanitize=address,undefined -Db_lundef=false -Dfuzz=disabled
	ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 \
		UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1 \
		run build-asan --suite lib
	setup build-tsan -Dwerror=true -Db_sanitize=thread -Dfuzz=disabled
	# TSan cannot map its shadow with the kernel's full mmap randomness.
	TSAN_OPTIONS=halt_on_error=1 \
		run build-tsan --suite lib --wrapper 'setarch x86_64 -R'
fi

echo "$accel_line"
echo "$pass passed, $fail failed"
[ "$fail" -eq 0 ]

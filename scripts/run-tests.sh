#!/bin/bash
# Runs every test: the whole suite in the normal build, then the library
# suite under ASan+UBSan and under TSan. Ends with "N passed, N failed".
# Needs root (userfaultfd on every memory type, hugetlbfs, /dev/kvm).
set -uo pipefail
cd "$(dirname "$0")/.."

pass=0
fail=0

die() {
	echo "run-tests: $*" >&2
	echo "$pass passed, $((fail + 1)) failed"
	exit 1
}

[ -c /dev/kvm ] || die "/dev/kvm is missing: the VM tests cannot run here"
[ -r /dev/kvm ] && [ -w /dev/kvm ] || die "/dev/kvm is not accessible"

# setup BUILD_DIR [meson options...]
setup() {
	local dir=$1
	shift
	if [ ! -f "$dir/build.ninja" ]; then
		meson setup "$dir" "$@" >"$dir.setup.log" 2>&1 ||
			{ cat "$dir.setup.log"; die "meson setup $dir failed"; }
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

setup build
run build

if [ "${LS_SKIP_SANITIZERS:-0}" != 1 ]; then
	setup build-asan -Db_sanitize=address,undefined -Db_lundef=false
	ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 \
		UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1 \
		run build-asan --suite lib
	setup build-tsan -Db_sanitize=thread
	# TSan cannot map its shadow with the kernel's full mmap randomness.
	TSAN_OPTIONS=halt_on_error=1 \
		run build-tsan --suite lib --wrapper 'setarch x86_64 -R'
fi

echo "$pass passed, $fail failed"
[ "$fail" -eq 0 ]

#!/bin/sh
# Install the Debian packages livesnap needs to build, test and benchmark.
# Idempotent: packages already present are not fetched again.
set -eu

# qemu-system-x86: a test boots the default guest under QEMU (TCG) too,
# and the benchmark compares against QEMU's background-snapshot.
# libunicorn-dev: the VMM's TCG accelerator (an emulated vCPU), for
# machines without /dev/kvm.
# clang-14, libclang-rt-14-dev: the reader's libFuzzer target (tests/fuzz),
# and the clang build of the library and the command.
# zstd: the program the README compresses snapshot streams with.
# man-db: a test renders the man pages.
# liburing-dev: the engine's test of io_uring reads into protected memory.
PKGS="gcc make meson ninja-build pkg-config libcmocka-dev libjansson-dev
libxxhash-dev liburing-dev zstd python3 binutils util-linux man-db
qemu-system-x86 libunicorn-dev clang-14 libclang-rt-14-dev"
# Plotting only when asked for.
if [ "${1:-}" = "--bench" ]; then
	PKGS="$PKGS python3-matplotlib"
fi

missing=""
for p in $PKGS; do
	dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" ||
		missing="$missing $p"
done
[ -z "$missing" ] && exit 0

if [ "$(id -u)" != 0 ]; then
	echo "install-deps: missing packages:$missing (run as root)" >&2
	exit 1
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
# shellcheck disable=SC2086
apt-get install -y -qq --no-install-recommends $missing

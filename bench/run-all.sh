#!/bin/bash
# Runs every benchmark (`make bench`): the engine bench and the VM bench
# against QEMU 7.2. Root needed; takes 10-20 minutes. The VM bench runs both
# VMMs on KVM when /dev/kvm is usable and emulated (TCG) otherwise; set
# ACCEL=kvm or ACCEL=tcg to choose. Reports go to bench/out/ (engine) and
# bench/vm/results-latest/ (VM).
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD=${BUILD:-build}
mkdir -p bench/out
"$BUILD/bench/engine/bench_engine" -d /var/tmp | tee bench/out/engine.md
/usr/bin/python3 bench/vm/run.py --build "$BUILD" \
	${ACCEL:+--accel "$ACCEL"} --outdir bench/vm/results-latest
echo "bench: engine report bench/out/engine.md, VM report bench/vm/results-latest/results.md"

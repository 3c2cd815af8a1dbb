#!/usr/bin/python3
# SPDX-License-Identifier: MIT
"""Runs the reader's libFuzzer target and says what it did.

usage: run_fuzz.py FUZZER SEEDS REGRESS [--seconds N] [--corpus DIR]

First replays every input in REGRESS (each one a crash found earlier and
fixed since), then fuzzes for N seconds from the seed corpus SEEDS. The
corpus grows in a scratch copy (or in DIR with --corpus, kept for the next
run); SEEDS is never written. Prints one line "fuzz: N executions in S s,
C crashes, K corpus inputs" and exits 0 only if nothing crashed, leaked,
timed out or ran out of memory. A crash input is kept as
fuzz-crash-<hash> in the current directory: add it to REGRESS with the fix.
"""
import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("fuzzer")
    ap.add_argument("seeds")
    ap.add_argument("regress")
    ap.add_argument("--seconds", type=int, default=45)
    ap.add_argument("--corpus")
    a = ap.parse_args()

    env = dict(os.environ)
    # leaks count as crashes; UBSan stops at the first report
    env["ASAN_OPTIONS"] = "detect_leaks=1:abort_on_error=0"
    env["UBSAN_OPTIONS"] = "halt_on_error=1:print_stacktrace=1"

    regress = sorted(os.path.join(a.regress, f)
                     for f in os.listdir(a.regress)
                     if not f.startswith("."))
    if regress:
        # -timeout: an input that hangs again fails here, as in fuzzing
        r = subprocess.run([a.fuzzer, "-timeout=20", *regress], env=env,
                           capture_output=True, text=True)
        if r.returncode:
            sys.stderr.write(r.stderr[-4000:])
            print(f"fuzz: a regression input crashes again "
                  f"({len(regress)} replayed)")
            return 1
    print(f"fuzz: {len(regress)} regression inputs replayed, no crash")

    scratch = tempfile.mkdtemp(prefix="ls-fuzz-")
    try:
        corpus = a.corpus or os.path.join(scratch, "corpus")
        os.makedirs(corpus, exist_ok=True)
        for f in os.listdir(a.seeds):
            shutil.copy(os.path.join(a.seeds, f), corpus)
        art = os.path.join(scratch, "art") + "/"
        os.makedirs(art)
        cmd = [a.fuzzer, corpus, f"-max_total_time={a.seconds}",
               "-max_len=131072", "-timeout=20", "-rss_limit_mb=2048",
               "-print_final_stats=1", f"-artifact_prefix={art}",
               "-close_fd_mask=1"]
        t0 = time.monotonic()
        r = subprocess.run(cmd, env=env, capture_output=True, text=True)
        took = time.monotonic() - t0
        execs = re.search(r"stat::number_of_executed_units:\s*(\d+)",
                          r.stderr)
        found = sorted(os.listdir(art))
        for f in found:
            shutil.copy(os.path.join(art, f), f"fuzz-{f}")
        ninputs = len(os.listdir(corpus))
        n = int(execs.group(1)) if execs else 0
        s = f"{took:.0f}"
        print(f"fuzz: {n} executions in {s} s, {len(found)} crashes, "
              f"{ninputs} corpus inputs")
        if r.returncode or found or not execs:
            sys.stderr.write(r.stderr[-6000:])
            for f in found:
                print(f"fuzz: crash input kept as "
                      f"{os.path.join(os.getcwd(), 'fuzz-' + f)}")
            return 1
        return 0
    finally:
        shutil.rmtree(scratch)


if __name__ == "__main__":
    sys.exit(main())

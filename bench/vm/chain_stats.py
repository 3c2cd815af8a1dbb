#!/usr/bin/python3
# SPDX-License-Identifier: MIT
"""Per-snapshot engine statistics along an incremental chain of a VM
(livesnap run, the built-in guest writing a working set): two full
snapshots without tracking, then the chain's full snapshot and its deltas.
For each: how tracking goes on after it, total time, the guest's page
writes per second while it ran, and query-migrate's write faults, pages
copied aside and fault stalls. Markdown on stdout.

usage: chain_stats.py [--build DIR] [--accel kvm|tcg] [--mem 4G]
                      [--ws-mib 256] [--deltas 3] [--interval 2]
"""
import os
import sys
import time
import shutil

import chainbench


def main():
    ap = chainbench.parser()
    ap.add_argument("--deltas", type=int, default=3)
    a = ap.parse_args()
    lsvm, work = chainbench.harness(a, "bench-stats-")
    v = lsvm.VM(*lsvm.run_args(mem=a.mem, ws_mib=a.ws_mib), workdir=work,
                name="src")
    try:
        v.start()
        v.wait_guest(min_gens=[1000], timeout=600)
        print("| snapshot | then tracked by | total ms | guest writes/s "
              "during | faults | copied | stall p50 / p99 / max us |\n"
              "|---|---|---:|---:|---:|---:|---|")
        plan = [("full %d" % k, False) for k in range(2)]
        plan += [("tracked full", True)]
        plan += [("delta %d" % k, True) for k in range(1, a.deltas + 1)]
        for name, inc in plan:
            time.sleep(a.interval)
            w0, t0 = sum(v.writes()), time.monotonic()
            path = os.path.join(work, name.replace(" ", "-") + ".snap")
            v.migrate("file:" + path, extra={"x-livesnap-incremental": inc})
            info = v.wait_migration(timeout=600)
            assert info["status"] == "completed", info
            during = (sum(v.writes()) - w0) / (time.monotonic() - t0)
            x = info["x-livesnap"]
            print("| %s | %s | %.0f | %.0f | %d | %d | %.0f / %.0f / %.0f |"
                  % (name, x.get("track", "-"), x["total-ns"] / 1e6,
                     during, x["faults"], x["copied-pages"],
                     x["stall-p50-ns"] / 1e3, x["stall-p99-ns"] / 1e3,
                     x["stall-max-ns"] / 1e3))
            sys.stdout.flush()
            if not inc:
                os.unlink(path)
        v.stop()
    finally:
        v.kill()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()

#!/usr/bin/python3
# SPDX-License-Identifier: MIT
"""Full against incremental live snapshots of a VM (livesnap run, the
built-in guest writing a working set), and restore from chains.

usage: incremental.py [--build DIR] [--mem 4G] [--ws-mib 256] [--cpus 1]
                      [--deltas 16] [--full 3] [--interval 2]
                      [--granule BYTES] [--accel tcg|kvm] [--dir /var/tmp]
                      [--no-track-async] [--no-dirty-log]
                      [--restores 1,4,16]

--no-track-async: tracking between snapshots stays on write faults
(x-livesnap-track-async false) instead of the kernel's asynchronous write
protection, which costs the VM a second short stop after each snapshot
(the settle, its own column). --no-dirty-log: on KVM, not by KVM's dirty
log (x-livesnap-track-dirty-log false), which is the default there and
needs no second stop.

Per snapshot: the pause (x-livesnap downtime) and the part of it spent
in ls_snapshot_begin (collecting the tracked writes, write-protecting),
bytes written, snapshot time, guest page writes per second in the
interval before it and during it (from the guest's own counters,
query-livesnap-guest). After the chain, one more full snapshot: its
pause is a full snapshot's on the page tables the working set's writes
left (split huge pages), the fair comparison for the deltas' pauses;
then --full more untracked ones, whose intervals are the untracked rate
after the chain: the guest's rate drifts within a run, so the tracked
intervals are compared with the mean of the untracked ones before and
after. Then restores of the chain ending at file 1, 4 and 16 (--restores),
eager and lazy (to the last page), from query-livesnap-restore.
Markdown on stdout.
"""
import os
import shutil
import sys
import time

import chainbench


def main():
    ap = chainbench.parser()
    ap.add_argument("--cpus", type=int, default=1)
    ap.add_argument("--deltas", type=int, default=16)
    ap.add_argument("--full", type=int, default=3)
    ap.add_argument("--granule", type=int, default=0)
    ap.add_argument("--no-track-async", action="store_true")
    ap.add_argument("--no-dirty-log", action="store_true")
    ap.add_argument("--restores", default="1,4,16",
                    help="chain lengths to restore from ('' for none)")
    a = ap.parse_args()
    lsvm, work = chainbench.harness(a, "bench-inc-")
    vms = []

    def vm(name, *args):
        v = lsvm.VM(*args, workdir=work, name=name)
        vms.append(v)
        return v.start()

    def writes(v):
        return sum(v.writes())

    def snap(v, path, inc):
        w0, t0 = writes(v), time.monotonic()
        v.migrate("file:" + path, extra={
            "x-livesnap-incremental": inc,
            "x-livesnap-track-granule": a.granule,
            "x-livesnap-track-async": not a.no_track_async,
            "x-livesnap-track-dirty-log": not a.no_dirty_log})
        info = v.wait_migration(timeout=1200)
        assert info["status"] == "completed", info
        during = (writes(v) - w0) / (time.monotonic() - t0)
        x = info["x-livesnap"]
        return (x["downtime-ns"] / 1e6, x["total-ns"] / 1e6,
                info["ram"]["normal-bytes"] / 2**20, during, x)

    def row(name, pause, total, mib, before, during, x):
        print("| %s | %s | %.2f | %.2f | %s | %.0f | %.1f | %.0f | %.0f |"
              % (name, x.get("track", "-"), pause, x["begin-ns"] / 1e6,
                 "%.2f" % (x["settle-ns"] / 1e6) if x.get("settle-ns")
                 else "-", total, mib, before, during))
        sys.stdout.flush()

    def interval(v):
        w0, t0 = writes(v), time.monotonic()
        time.sleep(a.interval)
        return (writes(v) - w0) / (time.monotonic() - t0)

    def untracked_fulls(v, label):
        """--full untracked full snapshots, each after an interval; the
        intervals' rates."""
        rates = []
        for k in range(a.full):
            before = interval(v)
            p = os.path.join(work, "full.snap")
            pause, total, mib, during, x = snap(v, p, False)
            os.unlink(p)
            rates.append(before)
            row(label % k, pause, total, mib, before, during, x)
        return rates

    try:
        print("VM: %s, %d vCPU, working set %d MiB per vCPU, %s, interval "
              "%.1f s, track granule %d, x-livesnap-track-async %s, "
              "x-livesnap-track-dirty-log %s\n"
              % (a.mem, a.cpus, a.ws_mib, a.accel, a.interval, a.granule,
                 not a.no_track_async, not a.no_dirty_log))
        src = vm("src", *lsvm.run_args(cpus=a.cpus, mem=a.mem,
                                       ws_mib=a.ws_mib))
        src.wait_guest(min_gens=[1000] * a.cpus, timeout=600)
        print("| snapshot | then tracked by | pause ms | of which begin ms "
              "| settle ms | total ms | MiB written | guest writes/s before "
              "| during |\n|---|---|---:|---:|---:|---:|---:|---:|---:|")
        full_rates, inc_rates = untracked_fulls(src, "full %d"), []
        paths = []
        for k in range(a.deltas + 1):
            before = interval(src)
            p = os.path.join(work, "c%02d.snap" % k)
            pause, total, mib, during, x = snap(src, p, True)
            assert x["delta"] == (k > 0), x
            paths.append(p)
            if k:
                inc_rates.append(before)
            row("%s %d" % ("delta" if k else "tracked full", k), pause,
                total, mib, before, during, x)
        before = interval(src)
        p = os.path.join(work, "after.snap")
        pause, total, mib, during, x = snap(src, p, False)
        os.unlink(p)
        row("full, after the chain", pause, total, mib, before, during, x)
        # The guest's rate drifts over a run (huge pages split by the
        # snapshots' faults): untracked intervals before the chain and
        # after it, the tracked ones against their mean.
        after_rates = untracked_fulls(src, "full %d after the chain")
        src.stop()
        if full_rates[1:] and inc_rates and after_rates:
            f0 = sum(full_rates[1:]) / len(full_rates[1:])
            f1 = sum(after_rates) / len(after_rates)
            f = (f0 + f1) / 2
            i = sum(inc_rates) / len(inc_rates)
            print("\nguest writes/s between snapshots: %.0f untracked "
                  "before the chain, %.0f after it, %.0f tracked (%+.1f%% "
                  "against their mean)" % (f0, f1, i, 100 * (i / f - 1)))
        print("\n| restore, chain of | eager ms | lazy ms (to the last "
              "page) |\n|---:|---:|---:|")
        for n in [int(n) for n in a.restores.split(",") if n]:
            if n > len(paths):
                break
            res = []
            for mode in ("eager", "lazy"):
                r = vm("r%d%s" % (n, mode), *lsvm.run_args(
                    mem=None, restore=paths[n - 1], mode=mode))
                for _ in range(6000):
                    q = r.qmp.cmd("query-livesnap-restore")
                    if q["complete"]:
                        break
                    time.sleep(0.1)
                res.append(q["restore-time-ns"] / 1e6 if mode == "eager"
                           else q["lazy-elapsed-ns"] / 1e6)
                r.stop()
            print("| %d | %.0f | %.0f |" % (n, res[0], res[1]))
            sys.stdout.flush()
    finally:
        for v in vms:
            try:
                v.kill()
            except Exception:
                pass
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()

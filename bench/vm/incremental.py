#!/usr/bin/python3
# SPDX-License-Identifier: MIT
"""Full against incremental live snapshots of a VM (livesnap run, the
built-in guest writing a working set), and restore from chains.

usage: incremental.py [--build DIR] [--mem 4G] [--ws-mib 256] [--cpus 1]
                      [--deltas 16] [--full 3] [--interval 2]
                      [--granule BYTES] [--accel tcg|kvm] [--dir /var/tmp]
                      [--no-track-async] [--no-dirty-log]
                      [--restores 1,4,16] [--cycles N]

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

--cycles N runs another experiment instead, built to take the guest's
drift out of the two comparisons the issue asks for. Each of N cycles is
an untracked full snapshot (which ends any tracking), a tracked full one
(which starts a chain) and a delta, each followed by an interval. Each
tracked interval is compared with the untracked intervals of its own
cycle and the next (the mean of the two neighbours in time), and each
delta's pause with the untracked full's pause of its cycle: paired
figures, their median and spread.
"""
import os
import shutil
import statistics
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
    ap.add_argument("--cycles", type=int, default=0,
                    help="interleaved untracked / tracked cycles instead "
                    "of the chain (see above)")
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

    def snap_dropped(v, inc):
        """snap() into a scratch file, deleted after."""
        p = os.path.join(work, "scratch.snap")
        out = snap(v, p, inc)
        os.unlink(p)
        return out

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
            pause, total, mib, during, x = snap_dropped(v, False)
            rates.append(before)
            row(label % k, pause, total, mib, before, during, x)
        return rates

    def cycles(v):
        """--cycles: untracked full, tracked full, delta, each then an
        interval; paired comparisons."""
        u_rates, t_rates, pauses = [], [], []
        parts = {"full": [], "tracked full": [], "delta": []}
        for k in range(a.cycles):
            cyc = {}
            for kind, inc in (("full", False), ("tracked full", True),
                              ("delta", True)):
                pause, total, mib, during, x = snap_dropped(v, inc)
                assert x.get("delta", False) == (kind == "delta"), x
                after = interval(v)
                cyc[kind] = pause
                parts[kind].append((pause, x["stop-ns"] / 1e6,
                                    x["capture-ns"] / 1e6,
                                    x["begin-ns"] / 1e6,
                                    x.get("arm-ns", 0) / 1e6))
                (t_rates if inc else u_rates).append(after)
                row("%s %d" % (kind, k), pause, total, mib, after, during, x)
            pauses.append((cyc["full"], cyc["delta"]))
        # The last cycle's tracked intervals need the next untracked one.
        pause, total, mib, during, x = snap_dropped(v, False)
        u_rates.append(interval(v))
        row("full %d" % a.cycles, pause, total, mib, u_rates[-1], during, x)
        track = [100 * (t_rates[i] / ((u_rates[i // 2] +
                                       u_rates[i // 2 + 1]) / 2) - 1)
                 for i in range(len(t_rates))]
        ctrl = [100 * (u_rates[i + 1] / u_rates[i] - 1)
                for i in range(len(u_rates) - 1)]
        dp = [100 * (d / f - 1) for f, d in pauses]
        print("\n| paired figure (%d cycles) | median | mean | range |\n"
              "|---|---:|---:|---|" % a.cycles)
        for name, xs in (("tracked interval vs its untracked neighbours, %",
                          track),
                         ("untracked interval vs the one before, % "
                          "(the noise of the measure)", ctrl),
                         ("delta pause vs its cycle's full pause, %", dp)):
            print("| %s | %+.1f | %+.1f | %+.1f .. %+.1f |"
                  % (name, statistics.median(xs), statistics.mean(xs),
                     min(xs), max(xs)))
        print("\npauses, ms: fulls %s; deltas %s"
              % (" ".join("%.2f" % f for f, d in pauses),
                 " ".join("%.2f" % d for f, d in pauses)))
        print("guest writes/s: untracked %.0f, tracked %.0f (means)"
              % (statistics.mean(u_rates), statistics.mean(t_rates)))
        print("\n| pause, medians, ms | pause | stop | capture | begin "
              "| of which arm |\n|---|---:|---:|---:|---:|---:|")
        for kind, xs in parts.items():
            print("| %s | %s |" % (kind, " | ".join(
                "%.3f" % statistics.median(col) for col in zip(*xs))))

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
              "| settle ms | total ms | MiB written | guest writes/s %s "
              "| during |\n|---|---|---:|---:|---:|---:|---:|---:|---:|"
              % ("after" if a.cycles else "before"))
        if a.cycles:
            cycles(src)
            return
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
        pause, total, mib, during, x = snap_dropped(src, False)
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

#!/usr/bin/python3
# SPDX-License-Identifier: MIT
"""Restore to running, repeated: how long `livesnap run --restore FILE`
takes from spawning the process to the QMP socket answering and to the
guest running on from the snapshot instant (its write counter moves past
the value the snapshot holds, as bench/vm/README.md "restore to running").

    bench/vm/restore_time.py --make FILE [--ram 4G] [--accel tcg]
        boots the default guest, lets its workload run, snapshots it to
        FILE through QMP (migrate file:), quits
    bench/vm/restore_time.py FILE [--runs 15] [--mode lazy] [--accel tcg]
                             [--build DIR] [--pin CPU] [--extra OPTS]
        restores FILE --runs times, one at a time, and prints a table
        (--build: another build's livesnap, e.g. a baseline's)

The value restored is read from the file (ls-snaptool check-guest: the
status page's per-vCPU write counters); the guest is polled over QMP
(query-livesnap-guest) every 0.5 ms. The file is read once before each
run so that the page cache is warm (the host evicts it after ~6 s).
Standard library only; the QMP client is tests/pylib/lsqmp.py.
"""
import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, os.path.join(ROOT, 'tests', 'pylib'))
from lsqmp import QMP  # noqa: E402
from vmmproc import spawn  # noqa: E402

def connect(path, proc, timeout=60.0):
    """A QMP connection as soon as the socket accepts one (0.5 ms polls)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError('livesnap exited (%d) before its QMP socket '
                               'answered' % proc.returncode)
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            s.connect(path)
        except (FileNotFoundError, ConnectionRefusedError):
            time.sleep(0.0005)
            continue
        finally:
            s.close()
        return QMP(path)
    raise RuntimeError('no QMP socket at %s' % path)


def stop(proc, q):
    try:
        if q:
            q.cmd('quit')
    except Exception:
        pass
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def make(args, work):
    sock = os.path.join(work, 'src.qmp')
    argv = [args.livesnap, 'run', '--accel', args.accel, '--mem', args.ram,
            '--cpus', str(args.cpus), '--qmp', sock,
            '--console', os.path.join(work, 'src.console'),
            '--cmdline', 'ls.ws_mib=%d' % args.ws_mib] + args.extra
    print(' '.join(argv))
    proc = spawn(argv, os.path.join(work, 'src.stderr'))
    q = connect(sock, proc)
    try:
        t0 = time.monotonic()
        first = None
        while time.monotonic() - t0 < 120:
            g = q.cmd('query-livesnap-guest')
            if g.get('ready') and all(c.get('valid') for c in g['cpus']):
                w = [c['writes'] for c in g['cpus']]
                if first is None:
                    first = w
                elif all(a > b for a, b in zip(w, first)):
                    break
            time.sleep(0.1)
        else:
            raise RuntimeError('the guest workload did not start')
        time.sleep(args.settle)
        q.cmd('migrate-set-capabilities', capabilities=[
            {'capability': 'background-snapshot', 'state': True}])
        q.cmd('migrate', uri='file:' + os.path.abspath(args.file))
        while True:
            r = q.cmd('query-migrate')
            if r.get('status') in ('completed', 'failed', 'cancelled'):
                break
            time.sleep(0.05)
        if r['status'] != 'completed':
            raise RuntimeError('snapshot %s: %s' % (r['status'], r))
        print('snapshot %s: %s in %.2f s' % (args.file, r['status'],
                                             r.get('total-time', 0) / 1e3))
    finally:
        stop(proc, q)


def restored_writes(args):
    out = subprocess.run([args.snaptool, 'check-guest', args.file],
                         stdout=subprocess.PIPE, check=True, text=True).stdout
    rep = json.loads(out)
    return [c['writes'] for c in rep['cpus']]


def warm(path):
    with open(path, 'rb') as f:
        while f.read(1 << 24):
            pass


def one_run(args, livesnap, work, base, i):
    sock = os.path.join(work, 'r%d.qmp' % i)
    argv = [livesnap, 'run', '--accel', args.accel, '--restore',
            args.file, '--restore-mode', args.mode, '--qmp', sock,
            '--console', '/dev/null'] + args.extra
    warm(args.file)
    t0 = time.monotonic()
    proc = spawn(argv, os.path.join(work, 'r%d.stderr' % i), args.pin)
    q = None
    try:
        q = connect(sock, proc)
        t_qmp = time.monotonic() - t0
        while True:
            if proc.poll() is not None:
                raise RuntimeError('livesnap exited (%d)' % proc.returncode)
            g = q.cmd('query-livesnap-guest')
            if g.get('ready'):
                w = [c.get('writes', 0) for c in g['cpus']]
                if any(a > b for a, b in zip(w, base)):
                    t_run = time.monotonic() - t0
                    break
            if time.monotonic() - t0 > 60:
                raise RuntimeError('the guest did not run on')
            time.sleep(0.0005)
        info = q.cmd('query-livesnap-restore')
    finally:
        stop(proc, q)
    return {'qmp': t_qmp * 1e3, 'running': t_run * 1e3,
            'vmm': info['restore-time-ns'] / 1e6,
            'memory': info['memory-ns'] / 1e6,
            'state': info['state-ns'] / 1e6}


def table(rows):
    cols = ('qmp', 'running', 'vmm', 'memory', 'state')
    names = {'qmp': 'spawn -> QMP socket', 'running': 'spawn -> guest running',
             'vmm': 'VMM restore-time', 'memory': '  of which memory',
             'state': '  of which state'}
    print('| ms (%d runs) | median | min | p25 | p75 | max |' % len(rows))
    print('|---|---|---|---|---|---|')
    for c in cols:
        v = sorted(r[c] for r in rows)
        q = statistics.quantiles(v, n=4) if len(v) > 1 else [v[0]] * 3
        print('| %s | %.1f | %.1f | %.1f | %.1f | %.1f |' % (
            names[c], statistics.median(v), v[0], q[0], q[2], v[-1]))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('file')
    ap.add_argument('--make', action='store_true',
                    help='take the snapshot FILE instead of restoring it')
    ap.add_argument('--build', action='append',
                    help='the build whose cli/livesnap runs (default '
                    'build/); given more than once, the builds take turns '
                    'run by run and each gets its table')
    ap.add_argument('--snaptool', default=os.path.join(
        ROOT, 'build', 'tests', 'snap', 'ls-snaptool'),
                    help='ls-snaptool, to read the counters in the file')
    ap.add_argument('--pin', type=int,
                    help='run the VMM on this CPU only (all its threads)')
    ap.add_argument('--accel', default='tcg')
    ap.add_argument('--mode', default='lazy')
    ap.add_argument('--runs', type=int, default=15)
    ap.add_argument('--ram', default='4G')
    ap.add_argument('--cpus', type=int, default=1)
    ap.add_argument('--ws-mib', type=int, default=64)
    ap.add_argument('--settle', type=float, default=2.0,
                    help='seconds of workload before the snapshot')
    ap.add_argument('--extra', default='',
                    help='more `livesnap run` options, space separated '
                    '(--make too: e.g. --mem-backend memfd for both)')
    ap.add_argument('--json', help='also write every run here')
    args = ap.parse_args()
    args.build = args.build or [os.path.join(ROOT, 'build')]
    args.livesnap = os.path.join(args.build[0], 'cli', 'livesnap')
    args.extra = args.extra.split()
    with tempfile.TemporaryDirectory(prefix='ls-restore-time-') as work:
        if args.make:
            make(args, work)
            return
        base = restored_writes(args)
        print('livesnap run --accel %s --restore %s --restore-mode %s %s'
              % (args.accel, args.file, args.mode, ' '.join(args.extra)))
        print('restored write counters: %s' % base)
        rows = {b: [] for b in args.build}
        for i in range(args.runs):
            for b in args.build:
                r = one_run(args, os.path.join(b, 'cli', 'livesnap'), work,
                            base, i)
                rows[b].append(r)
                print('%s run %2d: QMP %.1f ms, running %.1f ms (VMM %.1f: '
                      'memory %.1f, state %.1f)' % ((b, i) + tuple(
                          r[k] for k in ('qmp', 'running', 'vmm', 'memory',
                                         'state'))), flush=True)
        for b in args.build:
            print('\n%s/cli/livesnap' % b)
            table(rows[b])
        if args.json:
            with open(args.json, 'w') as f:
                json.dump(rows, f, indent=1)


if __name__ == '__main__':
    main()

#!/usr/bin/python3
# SPDX-License-Identifier: MIT
"""Live-snapshot benchmark: livesnap versus QEMU 7.2 background-snapshot.

One run boots the default guest (guest/abi.h workload) under QEMU microvm
and under `livesnap run` with the same vCPU count, RAM sizes and workload,
takes live snapshots through QMP on both, restores them, and writes
results.json, results.md and PNG plots into the output directory. Both VMMs
run on KVM (--accel kvm) or both emulate the vCPU (--accel tcg: QEMU TCG,
livesnap on Unicorn); the default is kvm when /dev/kvm is usable.

What is measured, per system and RAM size (see README.md for details):
  pause        query-migrate downtime; cross-checked by the worst write
               latency the guest saw in the snapshot window
  write stall  p99 (histogram bucket) and max of the guest's per-write
               latency during the snapshot, from its status area
  throughput   guest writes/s during the snapshot / in the 2 s before
  total        time from `migrate` to `completed`, and RAM bytes per second
  restore      process start -> the guest's write counter advances again

Standard library + matplotlib only (Debian python3-matplotlib).
"""

import argparse
import ctypes
import fcntl
import gzip
import json
import mmap
import os
import re
import shlex
import signal
import socket
import struct
import subprocess
import sys
import threading
import time

from vmmproc import spawn as spawn_vmm

# ----------------------------------------------------------------------
# guest/abi.h, mirrored (checked against the header at start-up)
# ----------------------------------------------------------------------

ABI = {
    'LSG_STATUS_GPA': 0x400000,
    'LSG_STATUS_MAGIC': 0x3154415453474c4c,
    'LSG_HIST_BUCKETS': 64,
    'LSG_TIMELINE_LEN': 2048,
}
STATUS_GPA = ABI['LSG_STATUS_GPA']
STATUS_MAGIC = ABI['LSG_STATUS_MAGIC']
HIST_BUCKETS = ABI['LSG_HIST_BUCKETS']
TIMELINE_LEN = ABI['LSG_TIMELINE_LEN']

# struct lsg_status, up to and including ram_bytes
STATUS_HEAD = struct.Struct('<QIIQQIIQQ')
# struct lsg_vcpu_status up to hist[]
VCPU_HEAD = struct.Struct('<QIIQQQQQQQ')
VCPU_HIST_OFF = VCPU_HEAD.size
VCPU_HEAD_OFF = VCPU_HIST_OFF + 8 * HIST_BUCKETS
VCPU_TIMELINE_OFF = VCPU_HEAD_OFF + 8
TL_ENTRY = struct.Struct('<QII')
GIB = 1 << 30
MIB = 1 << 20


def vcpu_status_off(i):
    return 0x1000 + i * 0x10000


def check_abi(header):
    """Fail loudly if guest/abi.h no longer matches what we mirror."""
    text = open(header).read()
    for name, val in ABI.items():
        m = re.search(r'#define\s+%s\s+(0x[0-9a-fA-F]+|\d+)' % name, text)
        if not m or int(m.group(1), 0) != val:
            sys.exit('bench: %s in %s is not %#x: update run.py' %
                     (name, header, val))
    if 'uint64_t hist[LSG_HIST_BUCKETS];\n\tuint64_t timeline_head;' \
            not in text:
        sys.exit('bench: struct lsg_vcpu_status layout changed in %s' %
                 header)


def log(*a):
    print('[%s]' % time.strftime('%H:%M:%S'), *a, file=sys.stderr,
          flush=True)


def kvm_usable():
    """/dev/kvm opens read-write and answers KVM_GET_API_VERSION (12)."""
    try:
        kvm = os.open('/dev/kvm', os.O_RDWR | os.O_CLOEXEC)
    except OSError:
        return False
    try:
        return fcntl.ioctl(kvm, 0xAE00, 0) == 12    # KVM_GET_API_VERSION
    except OSError:
        return False
    finally:
        os.close(kvm)


def host_tsc_khz():
    """KVM_GET_TSC_KHZ on a scratch VM: what the guest's rdtsc ticks at."""
    kvm = os.open('/dev/kvm', os.O_RDWR | os.O_CLOEXEC)
    try:
        vm = fcntl.ioctl(kvm, 0xAE01, 0)           # KVM_CREATE_VM
        try:
            vcpu = fcntl.ioctl(vm, 0xAE41, 0)      # KVM_CREATE_VCPU
            try:
                return fcntl.ioctl(vcpu, 0xAEA3, 0)  # KVM_GET_TSC_KHZ
            finally:
                os.close(vcpu)
        finally:
            os.close(vm)
    finally:
        os.close(kvm)


def rdtsc_khz(samples=5, secs=0.1):
    """The host TSC rate measured against CLOCK_MONOTONIC, no KVM needed:
    the median of `samples` intervals of `secs` (to ~0.01 %). x86-64 only:
    rdtsc is run from a page of machine code called through ctypes.

    Under --accel tcg this is the guest's rate on both systems: Unicorn's
    rdtsc and QEMU 7.2 TCG's (cpu_get_ticks(): cpu_get_host_ticks() plus
    an offset, no icount) read the host TSC; QEMU's stops while the VM is
    stopped (Vm.tsc_stops_in_pause), which shifts it but not its rate."""
    code = bytes([0x0f, 0x31,                  # rdtsc
                  0x48, 0xc1, 0xe2, 0x20,      # shl rdx, 32
                  0x48, 0x09, 0xd0,            # or rax, rdx
                  0xc3])                       # ret
    page = mmap.mmap(-1, mmap.PAGESIZE, prot=mmap.PROT_READ |
                     mmap.PROT_WRITE | mmap.PROT_EXEC)
    try:
        page.write(code)
        buf = ctypes.c_char.from_buffer(page)
        rdtsc = ctypes.CFUNCTYPE(ctypes.c_uint64)(ctypes.addressof(buf))
        def pair():
            """(TSC, CLOCK_MONOTONIC ns) read as close together as we
            can: the clock read before and after, the shortest of 5."""
            best = None
            for _ in range(5):
                ta = time.clock_gettime_ns(time.CLOCK_MONOTONIC)
                c = rdtsc()
                tb = time.clock_gettime_ns(time.CLOCK_MONOTONIC)
                if best is None or tb - ta < best[0]:
                    best = (tb - ta, c, (ta + tb) / 2)
            return best[1:]
        rates = []
        for _ in range(samples):
            c0, t0 = pair()
            time.sleep(secs)
            c1, t1 = pair()
            rates.append((c1 - c0) * 1e6 / (t1 - t0))
        del rdtsc, buf
    finally:
        page.close()
    return int(round(sorted(rates)[len(rates) // 2]))


def drop_file(path):
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


def warm_file(path):
    """Read a file once so that it sits in the page cache."""
    with open(path, 'rb', buffering=0) as f:
        while f.read(8 * MIB):
            pass


# ----------------------------------------------------------------------
# QMP
# ----------------------------------------------------------------------

class QmpError(Exception):
    pass


class Qmp:
    """Minimal synchronous QMP client; events are kept with their time."""

    def __init__(self, path, timeout=30.0):
        deadline = time.time() + timeout
        while True:
            try:
                self.sock = socket.socket(socket.AF_UNIX)
                self.sock.connect(path)
                break
            except (FileNotFoundError, ConnectionRefusedError):
                self.sock.close()
                if time.time() > deadline:
                    raise QmpError('QMP socket %s: no answer in %.0f s' %
                                   (path, timeout))
                time.sleep(0.0005)  # a restore waits on this poll
        self.sock.settimeout(120)
        self.rfile = self.sock.makefile('rb')
        self.events = []
        self.lock = threading.Lock()   # the collector shares the socket
        greeting = self._read()
        if 'QMP' not in greeting:
            raise QmpError('QMP greeting expected, got %r' % greeting)
        self.cmd('qmp_capabilities')

    def _read(self):
        line = self.rfile.readline()
        if not line:
            raise QmpError('QMP connection closed')
        return json.loads(line)

    def cmd(self, name, fds=None, **args):
        msg = {'execute': name}
        if args:
            msg['arguments'] = args
        data = (json.dumps(msg) + '\n').encode()
        with self.lock:
            if fds:
                socket.send_fds(self.sock, [data], fds)
            else:
                self.sock.sendall(data)
            return self._answer(name)

    def _answer(self, name):
        while True:
            r = self._read()
            if 'event' in r:
                ts = r.get('timestamp', {})
                r['host_t'] = ts.get('seconds', 0) + \
                    ts.get('microseconds', 0) / 1e6
                self.events.append(r)
                continue
            if 'error' in r:
                raise QmpError('%s: %s' % (name, r['error'].get('desc')))
            return r.get('return')

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass


# ----------------------------------------------------------------------
# Reading the guest's status area
# ----------------------------------------------------------------------

class StatusMap:
    """The status area read straight from a file that backs guest RAM."""

    def __init__(self, path, file_off=STATUS_GPA):
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        try:
            self.map = mmap.mmap(fd, 0x400000, mmap.MAP_SHARED,
                                 mmap.PROT_READ, offset=file_off)
        finally:
            os.close(fd)

    def refresh(self):
        """Nothing to do: the mapping is live."""

    def header(self):
        (magic, version, ncpus, ws_gpa, ws_pages, mode, ready, tsc_khz,
         ram_bytes) = STATUS_HEAD.unpack_from(self.map, 0)
        return {'magic': magic, 'version': version, 'ncpus': ncpus,
                'ws_pages': ws_pages, 'ready': ready, 'tsc_khz': tsc_khz,
                'ram_bytes': ram_bytes}

    def vcpu(self, i, hist=False):
        base = vcpu_status_off(i)
        (magic, cpu, running, writes, gen, max_ns, errors, validated, hb,
         inflight) = VCPU_HEAD.unpack_from(self.map, base)
        v = {'magic': magic, 'running': running, 'writes': writes,
             'max_ns': max_ns, 'errors': errors, 'hb_tsc': hb,
             'tl_head': struct.unpack_from(
                 '<Q', self.map, base + VCPU_HEAD_OFF)[0]}
        if hist:
            v['hist'] = list(struct.unpack_from(
                '<%dQ' % HIST_BUCKETS, self.map, base + VCPU_HIST_OFF))
        return v

    def timeline(self, i, first, last):
        """Entries [first, last) of vCPU i's ring (absolute indices)."""
        base = vcpu_status_off(i) + VCPU_TIMELINE_OFF
        out = []
        for k in range(first, last):
            out.append(TL_ENTRY.unpack_from(
                self.map, base + (k % TIMELINE_LEN) * TL_ENTRY.size))
        return out

    def close(self):
        self.map.close()


class StatusProcMem(StatusMap):
    """The status area read from another process's anonymous guest RAM
    through /proc/PID/mem (root), a copy per refresh()."""

    def __init__(self, pid, hva, ncpus):
        self.fd = os.open('/proc/%d/mem' % pid, os.O_RDONLY | os.O_CLOEXEC)
        self.hva = hva
        self.size = vcpu_status_off(ncpus)
        self.refresh()

    def refresh(self):
        self.map = os.pread(self.fd, self.size, self.hva + STATUS_GPA)

    def close(self):
        os.close(self.fd)


def find_ram_hva(pid, ram):
    """HVA of guest-physical 0 in pid: the start of the read-write mapping
    of exactly `ram` bytes whose status area holds the magic, if any."""
    try:
        with open('/proc/%d/maps' % pid) as f:
            lines = f.readlines()
        fd = os.open('/proc/%d/mem' % pid, os.O_RDONLY | os.O_CLOEXEC)
    except (FileNotFoundError, ProcessLookupError):
        return None
    try:
        for line in lines:
            rng, perms = line.split()[:2]
            lo, hi = (int(x, 16) for x in rng.split('-'))
            if hi - lo != ram or not perms.startswith('rw'):
                continue
            try:
                magic = struct.unpack('<Q', os.pread(fd, 8, lo + STATUS_GPA))
            except OSError:
                continue
            if magic[0] == STATUS_MAGIC:
                return lo
    finally:
        os.close(fd)
    return None


def open_status_procmem(vm):
    hva = find_ram_hva(vm.proc.pid, vm.ram)
    return None if hva is None else \
        StatusProcMem(vm.proc.pid, hva, vm.cfg.vcpus)


class Collector(threading.Thread):
    """Polls the status area: timeline entries and (time, tsc, writes)."""

    PERIOD = 0.05

    def __init__(self, status, ncpus):
        super().__init__(daemon=True)
        self.status = status
        self.ncpus = ncpus
        self.lock = threading.Lock()
        self.stop_ev = threading.Event()
        self.heads = [None] * ncpus
        self.entries = [[] for _ in range(ncpus)]
        self.lost = 0
        self.samples = []      # (host_t, [writes], [hb_tsc])
        self.fit = None

    def poll_once(self):
        self.status.refresh()
        t = time.time()
        vs = [self.status.vcpu(i) for i in range(self.ncpus)]
        with self.lock:
            self.samples.append((t, [v['writes'] for v in vs],
                                 [v['hb_tsc'] for v in vs]))
            for i, v in enumerate(vs):
                head = v['tl_head']
                last = self.heads[i]
                if last is None:
                    last = max(0, head - TIMELINE_LEN // 2)
                # stay clear of the slot the guest may be rewriting
                first = max(last, head - TIMELINE_LEN + 64)
                self.lost += first - last
                self.entries[i].extend(self.status.timeline(i, first, head))
                self.heads[i] = head

    def run(self):
        while not self.stop_ev.is_set():
            self.poll_once()
            self.stop_ev.wait(self.PERIOD)

    def stop(self):
        self.stop_ev.set()
        self.join()
        self.poll_once()

    def writes_at(self, t):
        """Total guest writes at host time t (interpolated)."""
        with self.lock:
            s = self.samples
            for k in range(1, len(s)):
                if s[k][0] >= t:
                    t0, w0, t1, w1 = s[k - 1][0], sum(s[k - 1][1]), \
                        s[k][0], sum(s[k][1])
                    if t1 == t0:
                        return w1
                    return w0 + (w1 - w0) * (t - t0) / (t1 - t0)
            return sum(s[-1][1])

    def tsc_to_host(self, tsc_khz, pauses=None):
        """A function guest TSC -> host time: a least-squares line through
        the (heartbeat, sample time) pairs taken while the guest ran, refit
        without the pairs more than 2 ms off (a late sample, a stalled
        heartbeat). The rate is fitted too: the nominal kHz is off by
        enough to drift 0.1 s over a long run.

        pauses, for a guest whose TSC stands still while the VM is paused
        (QEMU TCG), is the list of host-time (stop, resume) windows: the
        line then has one offset per stretch between pauses."""
        pts = []
        prev = None
        with self.lock:
            for t, _, hbs in self.samples:
                if prev is not None and hbs[0] != prev:
                    pts.append((hbs[0], t))
                prev = hbs[0]
        hz = tsc_khz * 1000.0
        if len(pts) < 10:
            off = pts[0][1] - pts[0][0] / hz if pts else 0.0
            return lambda tsc: tsc / hz + off
        pauses = sorted(p for p in pauses or () if p[0] and p[1])
        if pauses:
            return self._tsc_to_host_steps(pts, hz, pauses)
        x0 = pts[0][0]
        for _ in range(3):
            n = len(pts)
            mx = sum(x - x0 for x, _ in pts) / n
            my = sum(y for _, y in pts) / n
            sxx = sum((x - x0 - mx) ** 2 for x, _ in pts)
            sxy = sum((x - x0 - mx) * (y - my) for x, y in pts)
            slope = sxy / sxx if sxx else 1.0 / hz
            icpt = my - slope * mx
            keep = [(x, y) for x, y in pts
                    if abs(y - (icpt + slope * (x - x0))) < 0.002]
            if len(keep) < 10 or len(keep) == len(pts):
                break
            pts = keep
        self.fit = {'hz': 1.0 / slope if slope else hz, 'points': len(pts)}
        return lambda tsc: icpt + slope * (tsc - x0)

    def _tsc_to_host_steps(self, pts, hz, pauses):
        """tsc_to_host() with a step at each pause: one common slope, one
        intercept per stretch between pauses (a stretch with fewer than 5
        pairs is joined to the one before, i.e. that step is not fitted).
        self.fit['steps_ms'] gives each fitted step in host time: the time
        the guest's clock stood still, which should match the pause."""
        segs = [[]]
        ends = []                   # host time at which segs[k] ends
        for stop, resume in pauses:
            ends.append(stop)
            segs.append([])
        for x, y in pts:
            k = sum(1 for _, resume in pauses if y >= resume)
            if k < len(pauses) and y >= pauses[k][0]:
                continue            # sampled inside a pause
            segs[k].append((x, y))
        k = 1
        while k < len(segs):        # join stretches too short to fit
            if len(segs[k]) < 5 or len(segs[k - 1]) < 5:
                segs[k - 1] += segs.pop(k)
                ends.pop(k - 1)
            else:
                k += 1
        if len(segs[0]) < 5:
            off = pts[0][1] - pts[0][0] / hz
            return lambda tsc: tsc / hz + off
        x0 = pts[0][0]
        for _ in range(3):
            sxx = sxy = 0.0
            means = []
            for seg in segs:
                n = len(seg)
                mx = sum(x - x0 for x, _ in seg) / n
                my = sum(y for _, y in seg) / n
                means.append((mx, my))
                sxx += sum((x - x0 - mx) ** 2 for x, _ in seg)
                sxy += sum((x - x0 - mx) * (y - my) for x, y in seg)
            slope = sxy / sxx if sxx else 1.0 / hz
            icpts = [my - slope * mx for mx, my in means]
            kept = [[(x, y) for x, y in seg
                     if abs(y - (b + slope * (x - x0))) < 0.002]
                    for seg, b in zip(segs, icpts)]
            if any(len(k) < 5 for k in kept) or \
                    sum(map(len, kept)) == sum(map(len, segs)):
                break
            segs = kept
        # guest TSC at each stretch's end: where its line reaches the pause
        bounds = [x0 + (end - b) / slope for end, b in zip(ends, icpts)]
        self.fit = {'hz': 1.0 / slope if slope else hz,
                    'points': sum(map(len, segs)), 'segments': len(segs),
                    'steps_ms': [(b1 - b0) * 1e3 for b0, b1 in
                                 zip(icpts, icpts[1:])]}

        def to_host(tsc):
            k = 0
            while k < len(bounds) and tsc > bounds[k]:
                k += 1
            return icpts[k] + slope * (tsc - x0)
        return to_host


def pin_tid(tid, cpus, rt):
    """Pin thread tid to cpus and, if rt, make it SCHED_FIFO 1."""
    try:
        os.sched_setaffinity(tid, cpus)
        if rt:
            os.sched_setscheduler(tid, os.SCHED_FIFO, os.sched_param(1))
        return True
    except (ProcessLookupError, OSError):
        return False


# ----------------------------------------------------------------------
# The two systems under test
# ----------------------------------------------------------------------

class Vm:
    """A running guest: a process, its QMP socket and its status area."""

    name = '?'

    def __init__(self, cfg, ram, tag):
        self.cfg = cfg
        self.ram = ram
        self.tag = tag
        self.work = cfg.workdir
        self.sock = os.path.join(self.work, '%s.qmp' % tag)
        self.serial = os.path.join(cfg.outdir, 'logs', '%s.serial' % tag)
        self.stderr_path = os.path.join(cfg.outdir, 'logs', '%s.stderr' % tag)
        self.proc = None
        self.qmp = None
        self.status = None
        self.pinned = set()
        self.restore_info = None
        self.tsc_stops_in_pause = False

    def spawn(self, argv):
        drop_file(self.sock)
        drop_file(self.serial)
        self.argv = argv
        log('%s: %s' % (self.tag, ' '.join(shlex.quote(a) for a in argv)))
        # vmmproc: vfork()ed, on the bench's own CPU (pinned in main())
        self.t_spawn = time.time()
        self.proc = spawn_vmm(argv, self.stderr_path)

    def connect(self):
        self.qmp = Qmp(self.sock)
        self.pin()

    def pin(self):
        """Move the vCPU threads (QMP query-cpus-fast) to their CPU."""
        if not self.cfg.pin or self.qmp is None or \
                len(self.pinned) >= self.cfg.vcpus:
            return
        try:
            cpus = self.qmp.cmd('query-cpus-fast')
        except QmpError:
            return
        for c in cpus:
            tid = c.get('thread-id')
            if tid and tid not in self.pinned and \
                    pin_tid(tid, {self.cfg.vcpu_cpu}, self.cfg.rt):
                self.pinned.add(tid)

    def alive_or_die(self):
        if self.proc.poll() is not None:
            raise RuntimeError('%s exited with %s; see %s' % (
                self.tag, self.proc.returncode, self.stderr_path))

    def wait_running(self, timeout):
        """Wait until every vCPU's workload is running and writing."""
        deadline = time.time() + timeout
        while True:
            self.alive_or_die()
            # QMP may answer before a vCPU thread exists (thread-id 0,
            # seen with 4 GiB of memfd): pin it once it does, before the
            # first snapshot
            self.pin()
            if self.status is None:
                self.status = self.open_status()
            if self.status is not None:
                self.status.refresh()
                h = self.status.header()
                if h['magic'] == STATUS_MAGIC and h['ready']:
                    vs = [self.status.vcpu(i) for i in range(h['ncpus'])]
                    if h['ncpus'] == self.cfg.vcpus and \
                            all(v['running'] and v['writes'] > 0
                                for v in vs):
                        return h
            if time.time() > deadline:
                raise RuntimeError('%s: guest workload not running after '
                                   '%.0f s; see %s' % (self.tag, timeout,
                                                       self.serial))
            time.sleep(0.05)

    def migrate(self, **args):
        """background-snapshot on, `migrate`, follow it to the end."""
        q = self.qmp
        q.cmd('migrate-set-capabilities', capabilities=[
            {'capability': 'background-snapshot', 'state': True}])
        q.events.clear()
        t0 = time.time()
        q.cmd('migrate', **args)
        return follow_migration(q, t0, self.cfg.poll_migrate)

    def stop(self):
        if self.status:
            self.status.close()
            self.status = None
        if self.qmp:
            try:
                self.qmp.cmd('quit')
            except (QmpError, OSError):
                pass
            self.qmp.close()
            self.qmp = None
        if self.proc:
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        drop_file(self.sock)


class QemuVm(Vm):
    """QEMU 7.2 microvm, RAM in a shared /dev/shm file we can mmap."""

    name = 'qemu'

    def __init__(self, cfg, ram, tag):
        super().__init__(cfg, ram, tag)
        self.mem = '/dev/shm/lsbench-%s.mem' % tag
        # TCG's guest TSC is the host's minus the time the VM was stopped
        # (cpu_disable_ticks() at STOP): it stands still in the pause.
        self.tsc_stops_in_pause = cfg.accel == 'tcg'

    def accel_args(self):
        c = self.cfg
        if c.accel == 'tcg':
            # MTTCG (one thread per vCPU) is QEMU 7.2's default for an
            # x86 guest on an x86 host
            return ['-accel', 'tcg', '-cpu', c.qemu_cpu]
        return ['-enable-kvm', '-cpu', c.qemu_cpu]

    def argv(self, incoming=False):
        c = self.cfg
        mib = self.ram // MIB
        a = [c.qemu, '-name', 'lsbench,debug-threads=on'] + \
            self.accel_args() + [
             '-M', 'microvm,memory-backend=mem',
             '-smp', str(c.vcpus), '-m', '%dM' % mib,
             '-object', 'memory-backend-file,id=mem,size=%dM,'
             'mem-path=%s,share=on' % (mib, self.mem),
             '-nodefaults', '-no-user-config', '-nographic',
             '-display', 'none',
             '-serial', 'file:%s' % self.serial,
             '-qmp', 'unix:%s,server=on,wait=off' % self.sock]
        if incoming:
            a += ['-incoming', 'defer']
        else:
            a += ['-kernel', c.image, '-append', c.append]
        return a

    def start(self):
        drop_file(self.mem)
        self.spawn(self.argv())
        self.connect()

    def open_status(self):
        try:
            if os.path.getsize(self.mem) < STATUS_GPA + 0x400000:
                return None
            return StatusMap(self.mem)
        except FileNotFoundError:
            return None

    def snapshot(self, path):
        self.qmp.cmd('migrate-set-parameters',
                     **{'max-bandwidth': self.cfg.qemu_max_bw})
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC |
                     os.O_CLOEXEC, 0o644)
        try:
            self.qmp.cmd('getfd', fdname='snap', fds=[fd])
        finally:
            os.close(fd)
        return self.migrate(uri='fd:snap')

    def restore(self, path, mode):
        """-incoming defer + migrate-incoming fd:, timed from spawn."""
        drop_file(self.mem)
        self.spawn(self.argv(incoming=True))
        self.connect()
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        try:
            self.qmp.cmd('getfd', fdname='snapin', fds=[fd])
        finally:
            os.close(fd)
        self.qmp.cmd('migrate-incoming', uri='fd:snapin')
        return wait_advance(self, self.t_spawn, self.counters_mmap)

    def counters_mmap(self):
        if self.status is None:
            self.status = self.open_status()
            if self.status is None:
                return None
        self.status.refresh()
        return [self.status.vcpu(i)['writes'] for i in range(self.cfg.vcpus)]


class QemuAnonVm(QemuVm):
    """QEMU 7.2 microvm with its default anonymous RAM (-m only).

    Nothing to mmap: the status area is read through /proc/PID/mem.
    """

    name = 'qemu-anon'

    def argv(self, incoming=False):
        a = super().argv(incoming)
        i = a.index('-object')
        del a[i:i + 2]
        a[a.index('microvm,memory-backend=mem')] = 'microvm'
        return a

    def open_status(self):
        return open_status_procmem(self)


class LivesnapVm(Vm):
    """`livesnap run` with --mem-backend memfd: RAM is shmem, as for `qemu`;
    the status area is read by mmap of the memfd through /proc/PID/fd."""

    name = 'livesnap'
    backend = 'memfd'

    def argv(self, restore=None, mode=None):
        c = self.cfg
        a = [c.livesnap, 'run', '--accel', c.accel, '--qmp', self.sock,
             '--console', self.serial]
        if restore:
            a += ['--restore', restore, '--restore-mode', mode]
        else:
            # --accel tcg runs only the built-in guest (the same image,
            # built into the binary from guest/) and refuses --kernel
            if c.accel != 'tcg':
                a += ['--kernel', c.image]
            a += ['--cpus', str(c.vcpus),
                  '--mem', '%dM' % (self.ram // MIB), '--cmdline', c.append]
        return a + ['--mem-backend', self.backend]

    def start(self):
        self.spawn(self.argv())
        self.connect()

    def memfd_path(self):
        """/proc/PID/fd/N of the guest-RAM memfd, if there is one."""
        fddir = '/proc/%d/fd' % self.proc.pid
        try:
            for n in os.listdir(fddir):
                p = os.path.join(fddir, n)
                try:
                    if os.readlink(p).startswith('/memfd:livesnap-ram') \
                            and os.path.getsize(p) == self.ram:
                        return p
                except OSError:
                    continue
        except FileNotFoundError:
            pass
        return None

    def open_status(self):
        p = self.memfd_path()
        if p is None:
            return None
        st = StatusMap(p)
        if st.header()['magic'] != STATUS_MAGIC:
            st.close()
            return None
        return st

    def snapshot(self, path):
        args = {'x-livesnap-strategy': self.cfg.ls_strategy}
        args.update(self.cfg.ls_migrate_args)
        return self.migrate(uri='file:%s' % path, **args)

    def restore(self, path, mode):
        self.spawn(self.argv(restore=path, mode=mode))
        self.connect()
        secs = wait_advance(self, self.t_spawn, self.counters_qmp)
        try:
            self.restore_info = self.qmp.cmd('query-livesnap-restore')
        except QmpError:
            pass
        return secs

    def counters_qmp(self):
        r = self.qmp.cmd('query-livesnap-guest')
        if not r.get('ready'):
            return None
        return [c.get('writes', 0) for c in r.get('cpus', [])] or None


class LivesnapAnonVm(LivesnapVm):
    """`livesnap run` with its default anonymous THP RAM, as `qemu-anon`;
    the status area is read through /proc/PID/mem."""

    name = 'livesnap-anon'
    backend = 'anon'

    def open_status(self):
        return open_status_procmem(self)


SYSTEMS = ('qemu', 'livesnap', 'qemu-anon', 'livesnap-anon')


def follow_migration(q, t0, period):
    """Poll query-migrate to the end; returns its last answer + timings."""
    while True:
        r = q.cmd('query-migrate')
        st = r.get('status')
        if st in ('completed', 'failed', 'cancelled'):
            t1 = time.time()
            break
        time.sleep(period)
    if st != 'completed':
        raise RuntimeError('snapshot %s: %s' % (st, r.get('error-desc')))
    # QEMU's STOP/RESUME events (timestamped by QEMU) bracket the pause.
    stop = [e['host_t'] for e in q.events if e['event'] == 'STOP']
    resume = [e['host_t'] for e in q.events if e['event'] == 'RESUME']
    m = {'t_start': t0, 't_end': t1, 'query': r, 'pause_src': 'events',
         't_stop': stop[0] if stop else None,
         't_resume': resume[0] if resume else None}
    x = r.get('x-livesnap', {})
    if not stop and 'setup-ns' in x and 'downtime-ns' in x:
        # livesnap sends no STOP/RESUME: place the pause from its own
        # figures (setup = migrate .. vCPUs parked), within ~1 ms
        m['t_stop'] = t0 + (x['setup-ns'] - x.get('stop-ns', 0)) / 1e9
        m['t_resume'] = m['t_stop'] + x['downtime-ns'] / 1e9
        m['pause_src'] = 'x-livesnap'
    return m


def pause_parts(xl):
    """'pause = stop + capture + begin (arm) + rest' from x-livesnap, in ms;
    the rest is the VMM's own time between those and the resume."""
    ms = {f: ns_ms(xl.get(f + '-ns')) for f in
          ('downtime', 'stop', 'capture', 'begin', 'arm')}
    if None in (ms['downtime'], ms['stop'], ms['capture'], ms['begin']):
        return '%s = %s + %s + arm %s' % tuple(
            fmt(ms[f], '%.2f') for f in ('downtime', 'stop', 'capture',
                                          'arm'))
    rest = ms['downtime'] - ms['stop'] - ms['capture'] - ms['begin']
    return '%.2f = %.2f + %.2f + %.2f (%s) + %.2f' % (
        ms['downtime'], ms['stop'], ms['capture'], ms['begin'],
        fmt(ms['arm'], '%.2f'), rest)


def wait_advance(vm, t0, counters, timeout=120.0):
    """Seconds from t0 until the guest's write counters move again."""
    first = None
    deadline = time.time() + timeout
    n = 0
    while time.time() < deadline:
        vm.alive_or_die()
        if n % 8 == 0:
            vm.pin()        # a no-op once every vCPU is pinned
        n += 1
        try:
            c = counters()
        except (QmpError, OSError):
            c = None
        if c and any(c):
            if first is None:
                first = c
            elif any(a > b for a, b in zip(c, first)):
                return time.time() - t0
        time.sleep(0.0005)
    raise RuntimeError('%s: guest did not run within %.0f s of restore' %
                       (vm.tag, timeout))


# ----------------------------------------------------------------------
# One system, one RAM size
# ----------------------------------------------------------------------

def hist_pct(delta, pct):
    """Upper edge (ns) of the histogram bucket holding the pct-th write."""
    total = sum(delta)
    if not total:
        return None
    need = total * pct / 100.0
    acc = 0
    for i, n in enumerate(delta):
        acc += n
        if acc >= need:
            return 2 ** (i + 1)
    return 2 ** HIST_BUCKETS


def stall_stats(coll, h0, h1, t_from, t_to, to_host, pause=None):
    """Write-latency figures for guest time inside [t_from, t_to].

    pause, if known, is the host-time (stop, resume) of the VM pause: the
    worst write outside it is reported apart (max_ns_running), since the
    write that straddles the pause just measures the pause again.
    """
    delta = [0] * HIST_BUCKETS
    for a, b in zip(h0, h1):
        for i in range(HIST_BUCKETS):
            delta[i] += b['hist'][i] - a['hist'][i]
    worst = worst_run = 0
    worst_t = None
    gap = 0.0
    with coll.lock:
        for ents in coll.entries:
            prev = None
            for tsc, writes, max_ns in ents:
                t = to_host(tsc)
                # an interval closes with the first write after ~1 ms: a
                # longer one means the vCPU made no progress for that long
                if prev is not None and t_from - 0.002 <= t <= t_to + 0.002:
                    gap = max(gap, t - prev - 0.001)
                prev = t
                if not t_from - 0.002 <= t <= t_to + 0.002:
                    continue
                if max_ns > worst:
                    worst, worst_t = max_ns, t
                # entries whose interval (~1 ms + its worst write) may
                # overlap the pause, with 10 ms for the clock mapping
                in_pause = pause and pause[0] and \
                    t - 0.01 <= pause[1] and \
                    t + 0.011 + max_ns / 1e9 >= pause[0]
                if not in_pause and max_ns > worst_run:
                    worst_run = max_ns
    # max_lat_ns is a running max since boot: if it grew, it grew here.
    run_max = max(b['max_ns'] for b in h1)
    if run_max > max(a['max_ns'] for a in h0):
        worst = max(worst, run_max)
    return {'writes': sum(delta), 'p50_ns': hist_pct(delta, 50),
            'p99_ns': hist_pct(delta, 99), 'p999_ns': hist_pct(delta, 99.9),
            'max_ns': worst, 'max_at': worst_t, 'gap_ms': gap * 1e3,
            'max_ns_running': worst_run if pause and pause[0] else None}


def noise_floor(tl, snaps, margin=0.05):
    """The guest's write stalls while no snapshot ran (timeline entries
    more than `margin` s outside every migrate..completed window): what the
    machine does to the guest anyway, to read the in-snapshot maxima
    against. tl: sorted (host_t, vcpu, writes, max_ns)."""
    wins = [(m['t_start'] - margin, m['t_end'] + margin) for m in snaps]

    def outside(t):
        return not any(a <= t <= b for a, b in wins)
    worst = gap = 0.0
    over = 0
    prev = {}
    for t, v, _, ns in tl:
        if outside(t):
            worst = max(worst, ns)
            over += ns > 10e6
            if v in prev and outside(prev[v]):
                gap = max(gap, t - prev[v] - 0.001)
        prev[v] = t
    span = tl[-1][0] - tl[0][0] if tl else 0.0
    inside = sum(min(b, tl[-1][0]) - max(a, tl[0][0]) for a, b in wins
                 if tl and b > tl[0][0] and a < tl[-1][0])
    return {'seconds': span - inside, 'max_ns': worst, 'gap_ms': gap * 1e3,
            'over_10ms': over}


def prepopulate(vm):
    """What-if: read one byte per 2 MiB of the VMM's anonymous guest RAM
    through /proc/PID/mem, as QEMU's ram_block_populate_read() does for
    itself, so that untouched THP-eligible RAM maps the huge zero page
    (cheap to write-protect) instead of staying unpopulated. Seconds."""
    hva = find_ram_hva(vm.proc.pid, vm.ram)
    if hva is None:
        raise RuntimeError('%s: guest RAM mapping not found' % vm.tag)
    fd = os.open('/proc/%d/mem' % vm.proc.pid, os.O_RDONLY | os.O_CLOEXEC)
    t0 = time.time()
    try:
        for off in range(0, vm.ram, 2 * MIB):
            os.pread(fd, 1, hva + off)
    finally:
        os.close(fd)
    return time.time() - t0


def read_vcpus(vm):
    vm.status.refresh()
    return [vm.status.vcpu(i, hist=True) for i in range(vm.cfg.vcpus)]


def measure_vm(cfg, cls, ram):
    tag = '%s-%dg' % (cls.name, ram // GIB)
    vm = cls(cfg, ram, tag)
    res = {'system': cls.name, 'ram': ram, 'snapshots': [], 'restores': []}
    snapfile = os.path.join(cfg.snapdir, '%s.snap' % tag)
    coll = None
    try:
        t_boot = time.time()
        vm.start()
        hdr = vm.wait_running(cfg.boot_timeout)
        res['boot_s'] = time.time() - t_boot
        res['guest'] = hdr
        log('%s: guest running after %.1f s (ws_pages=%d, ram_bytes=%d)' %
            (tag, res['boot_s'], hdr['ws_pages'], hdr['ram_bytes']))
        if cfg.prepopulate and isinstance(vm, LivesnapAnonVm):
            res['prepopulate_ms'] = prepopulate(vm) * 1e3
        coll = Collector(vm.status, cfg.vcpus)
        coll.start()
        time.sleep(cfg.warmup)
        for k in range(cfg.snapshots):
            drop_file(snapfile)
            t_b0 = time.time()
            time.sleep(cfg.before)
            h0 = read_vcpus(vm)
            m = vm.snapshot(snapfile)
            h1 = read_vcpus(vm)
            time.sleep(cfg.after)
            vm.alive_or_die()
            m['t_b0'] = t_b0
            m['h0'], m['h1'] = h0, h1
            st = os.stat(snapfile)
            m['file_bytes'] = st.st_size
            m['file_alloc_bytes'] = st.st_blocks * 512   # sparse files
            res['snapshots'].append(m)
            log('%s: snapshot %d: %.3f s, %d bytes, downtime %s' % (
                tag, k + 1, m['t_end'] - m['t_start'], m['file_bytes'],
                m['query'].get('downtime')))
            if k + 1 < cfg.snapshots:
                time.sleep(cfg.gap)
        coll.stop()
        summarize(vm, coll, res)
    finally:
        if coll and coll.is_alive():
            coll.stop()
        vm.stop()
        if isinstance(vm, QemuVm):
            drop_file(vm.mem)
    if not res['snapshots']:
        return res
    for mode in (['defer'] if issubclass(cls, QemuVm)
                 else cfg.restore_modes):
        if not os.path.exists(snapfile):
            break
        for rep in range(cfg.restore_reps):
            rvm = cls(cfg, ram, '%s-restore-%s' % (tag, mode))
            try:
                warm_file(snapfile)       # page cache warm, see README
                secs = rvm.restore(snapfile, mode)
                res['restores'].append({'mode': mode, 'rep': rep,
                                        'seconds': secs,
                                        'vmm': rvm.restore_info})
                log('%s: restore (%s) to running: %.1f ms' %
                    (tag, mode, secs * 1e3))
            except (RuntimeError, QmpError, OSError) as e:
                res['restores'].append({'mode': mode, 'rep': rep,
                                        'error': str(e)})
                log('%s: restore (%s) FAILED: %s' % (tag, mode, e))
            finally:
                rvm.stop()
                if isinstance(rvm, QemuVm):
                    drop_file(rvm.mem)
    if not cfg.keep_snapshots:
        drop_file(snapfile)
    return res


def summarize(vm, coll, res):
    """Turn raw samples into the numbers of the report."""
    khz = res['guest']['tsc_khz'] or vm.cfg.tsc_khz
    to_host = coll.tsc_to_host(khz, [(m['t_stop'], m['t_resume'])
                                     for m in res['snapshots']]
                               if vm.tsc_stops_in_pause else None)
    for m in res['snapshots']:
        q = m['query']
        t0, t1 = m['t_start'], m['t_end']
        x = q.get('x-livesnap', {})
        m['downtime_ms'] = x['downtime-ns'] / 1e6 if 'downtime-ns' in x \
            else q.get('downtime')
        m['setup_ms'] = x['setup-ns'] / 1e6 if 'setup-ns' in x \
            else q.get('setup-time')
        m['total_ms'] = q.get('total-time')
        m['wall_s'] = t1 - t0
        # The window in which guest writes can fault: from the pause on.
        tp = m['t_stop'] if m['t_stop'] else t0
        m['stall'] = stall_stats(coll, m['h0'], m['h1'], t0, t1, to_host,
                                 (m['t_stop'], m['t_resume']))
        before = (coll.writes_at(t0) - coll.writes_at(m['t_b0'])) / \
            (t0 - m['t_b0'])
        during = (coll.writes_at(t1) - coll.writes_at(t0)) / (t1 - t0)
        m['wps_before'] = before
        m['wps_during'] = during
        m['wps_ratio'] = during / before if before else None
        # guest work the snapshot cost, in seconds of full-speed running
        m['lost_s'] = (before - during) * (t1 - t0) / before \
            if before else None
        # protected phase only (pause .. end), when the pause is known
        if m['t_resume']:
            # the first second after the pause: most faults land there
            tr = m['t_resume']
            te = min(tr + 1.0, t1)
            m['wps_first_s'] = (coll.writes_at(te) - coll.writes_at(tr)) \
                / max(te - tr, 1e-9)
            m['wps_first_s_ratio'] = m['wps_first_s'] / before \
                if before else None
        ram = q.get('ram', {})
        m['ram_total'] = ram.get('total', vm.ram)
        # RAM covered per second over the whole snapshot, and from the
        # pause on (QEMU first pre-faults all RAM while the guest runs)
        m['gbps_ram'] = m['ram_total'] / (t1 - t0) / 1e9
        m['gbps_ram_after_pause'] = m['ram_total'] / (t1 - tp) / 1e9
        m['gbps_file'] = m['file_alloc_bytes'] / (t1 - t0) / 1e9
        m['pause_window'] = [m['t_stop'], m['t_resume']]
        for key in ('h0', 'h1'):
            del m[key]
    hz = khz * 1000.0
    tl = []
    for i, ents in enumerate(coll.entries):
        for tsc, writes, max_ns in ents:
            tl.append((to_host(tsc), i, writes, max_ns))
    tl.sort()
    res['timeline'] = tl
    res['timeline_lost'] = coll.lost
    res['outside'] = noise_floor(tl, res['snapshots'])
    res['tsc_fit'] = coll.fit
    res['tsc_hz'] = hz


# ----------------------------------------------------------------------
# Output: JSON, Markdown table, plots
# ----------------------------------------------------------------------

def fmt(v, spec='%.2f'):
    return '-' if v is None else spec % v


def ns_ms(v):
    return None if v is None else v / 1e6


def ns_us(v):
    return None if v is None else v / 1e3


def summary(results):
    """One line per system and RAM size; 'a / b' = snapshot #1 / #2."""
    def both(r, f, spec):
        return ' / '.join(fmt(f(m), spec) for m in r['snapshots']) or '-'

    rows = ['| system | RAM | pause ms | guest longest no-progress ms | guest '
            'max write outside pause ms | guest p99 write us (<=) | during/'
            'before | guest time lost s | total s | RAM GB/s | restore ms |',
            '|' + '---|' * 11]
    for r in results:
        if 'error' in r:
            rows.append('| %s | %d GiB | FAILED: %s |' % (
                r['system'], r['ram'] // GIB, r['error'][:100]))
            continue
        rs = ', '.join('%s %s' % (x['mode'], '%.0f' % (x['seconds'] * 1e3)
                                  if 'seconds' in x else 'FAILED')
                       for x in r['restores'])
        rows.append('| %s | %d GiB | %s | %s | %s | %s | %s | %s | %s | %s '
                    '| %s |' % (
                        r['system'], r['ram'] // GIB,
                        both(r, lambda m: m['downtime_ms'], '%.0f'),
                        both(r, lambda m: m['stall']['gap_ms'], '%.0f'),
                        both(r, lambda m: ns_ms(
                            m['stall']['max_ns_running']), '%.1f'),
                        both(r, lambda m: ns_us(m['stall']['p99_ns']),
                             '%.1f'),
                        both(r, lambda m: m['wps_ratio'], '%.2f'),
                        both(r, lambda m: m.get('lost_s'), '%.2f'),
                        both(r, lambda m: m['wall_s'], '%.1f'),
                        both(r, lambda m: m['gbps_ram'], '%.2f'), rs))
    return '\n'.join(rows) + '\n'


def table(results):
    """The three Markdown tables of results.md."""
    a = ['| system | RAM | # | pause, query-migrate ms | pause, STOP..RESUME '
         'ms | guest: longest no-progress ms | guest: max write ms | guest: '
         'max write outside the pause ms | guest: p99 write us (<=) | '
         'guest: p99.9 write us (<=) |', '|' + '---|' * 10]
    b = ['| system | RAM | # | writes/s before | writes/s during | during/'
         'before | guest time lost s | 1st s after pause / before | total s '
         '| of which setup s | RAM GB/s | file MB allocated (size) | '
         'file GB/s |', '|' + '---|' * 13]
    for r in results:
        for k, m in enumerate(r['snapshots']):
            st = m['stall']
            pw = m['pause_window']
            head = '| %s | %d GiB | %d ' % (r['system'], r['ram'] // GIB,
                                            k + 1)
            a.append(head + '| %s | %s | %s | %s | %s | %s | %s |' % (
                fmt(m['downtime_ms'], '%.3f'),
                fmt((pw[1] - pw[0]) * 1e3 if m['pause_src'] == 'events'
                    and pw[0] and pw[1] else None, '%.1f'),
                fmt(st['gap_ms'], '%.2f'), fmt(ns_ms(st['max_ns']), '%.3f'),
                fmt(ns_ms(st['max_ns_running']), '%.3f'),
                fmt(ns_us(st['p99_ns']), '%.1f'),
                fmt(ns_us(st['p999_ns']), '%.1f')))
            b.append(head + '| %.0f | %.0f | %s | %s | %s | %.2f | %s | '
                     '%.2f | %.0f (%.0f) | %.2f |' % (
                         m['wps_before'], m['wps_during'],
                         fmt(m['wps_ratio']), fmt(m.get('lost_s')),
                         fmt(m.get('wps_first_s_ratio')), m['wall_s'],
                         fmt(m['setup_ms'] / 1e3 if m['setup_ms'] is not None
                             else None, '%.2f'),
                         m['gbps_ram'], m['file_alloc_bytes'] / 1e6,
                         m['file_bytes'] / 1e6,
                         m['gbps_file']))
    x = ['| system | RAM | # | strategy | write faults | pages copied | '
         'VMM-measured stall p50 / p99 / p99.9 / max us | pause = stop + '
         'capture + begin (of it arm) + rest ms |', '|' + '---|' * 8]
    for r in results:
        for k, m in enumerate(r['snapshots']):
            xl = m['query'].get('x-livesnap')
            if not xl:
                continue
            x.append('| %s | %d GiB | %d | %s | %s | %s | %s | %s |' % (
                r['system'], r['ram'] // GIB, k + 1, xl.get('strategy'),
                xl.get('faults'), xl.get('copied-pages'),
                ' / '.join(fmt(ns_us(xl.get(f)), '%.1f') for f in (
                    'stall-p50-ns', 'stall-p99-ns', 'stall-p999-ns',
                    'stall-max-ns')),
                pause_parts(xl)))
    c = ['| system | RAM | restore | spawn to guest writing ms | VMM-reported '
         'restore ms (memory / state) |', '|---|---|---|---|---|']
    for r in results:
        for rs in r['restores']:
            v = rs.get('vmm') or {}
            c.append('| %s | %d GiB | %s | %s | %s |' % (
                r['system'], r['ram'] // GIB, rs['mode'],
                '%.1f' % (rs['seconds'] * 1e3) if 'seconds' in rs
                else 'FAILED: ' + rs['error'],
                '%.1f (%.1f / %.1f)' % (v['restore-time-ns'] / 1e6,
                                        v.get('memory-ns', 0) / 1e6,
                                        v.get('state-ns', 0) / 1e6)
                if 'restore-time-ns' in v else '-'))
    g = ['| system | RAM | told ls.tsc_khz | fitted kHz | off % | pairs | '
         'clock steps ms (pauses ms) |', '|---|---|---|---|---|---|---|']
    for r in results:
        f, khz = r.get('tsc_fit'), r.get('guest', {}).get('tsc_khz')
        if not f or not khz:
            continue
        g.append('| %s | %d GiB | %d | %.0f | %+.3f | %d | %s |' % (
            r['system'], r['ram'] // GIB, khz, f['hz'] / 1e3,
            (f['hz'] / 1e3 / khz - 1) * 100, f['points'],
            '%s (%s)' % (', '.join('%.1f' % x for x in f['steps_ms']),
                         ', '.join(fmt(m['downtime_ms'], '%.1f')
                                   for m in r['snapshots']))
            if 'steps_ms' in f else '-'))
    n = ['| system | RAM | s observed | guest max write ms | guest longest '
         'no-progress ms | writes over 10 ms |', '|---|---|---|---|---|---|']
    for r in results:
        o = r.get('outside')
        if o:
            n.append('| %s | %d GiB | %.1f | %.1f | %.1f | %d |' % (
                r['system'], r['ram'] // GIB, o['seconds'],
                o['max_ns'] / 1e6, o['gap_ms'], o['over_10ms']))
    return '\n'.join(['### Pause and guest write stalls', ''] + a +
                     ['', '### Throughput and snapshot speed', ''] + b +
                     (['', '### livesnap engine figures (x-livesnap in '
                       'query-migrate)', ''] + x if len(x) > 2 else []) +
                     ['', '### Restore', ''] + c +
                     ['', '### Guest clock (TSC rate the guest was told vs '
                      'the rate fitted against host time; steps: where the '
                      'guest TSC stood still in a pause)', ''] + g +
                     (['', '### Guest stalls outside the snapshots (the same '
                       'VM while no snapshot ran: the noise floor of the '
                       'maxima above)', ''] + n if len(n) > 2 else [])) + \
        '\n'


def plot(results, path):
    """Per RAM size and system: worst write latency and writes per ~1 ms
    interval over time, snapshot windows shaded, the pause in red."""
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt

    rams = sorted({r['ram'] for r in results})
    systems = [s for s in SYSTEMS
               if any(r['system'] == s for r in results)]
    fig, axes = plt.subplots(
        2 * len(rams), len(systems), squeeze=False,
        figsize=(6.5 * len(systems), 5.0 * len(rams)),
        gridspec_kw={'height_ratios': [3, 1] * len(rams)})
    for r in results:
        row = 2 * rams.index(r['ram'])
        col = systems.index(r['system'])
        ax, axw = axes[row][col], axes[row + 1][col]
        ax.set_title('%s, %d GiB' % (r['system'], r['ram'] // GIB))
        if not r.get('timeline') or not r['snapshots']:
            ax.text(0.5, 0.5, r.get('error', 'no data')[:80],
                    transform=ax.transAxes, ha='center', fontsize=7)
            continue
        t0 = r['snapshots'][0]['t_start']
        xs = [(t - t0) for t, _, _, _ in r['timeline']]
        ax.plot(xs, [max(ns, 1) / 1e3 for _, _, _, ns in r['timeline']],
                lw=0.4, color='tab:blue',
                label='worst write per ~1 ms interval')
        axw.plot(xs, [w for _, _, w, _ in r['timeline']], lw=0.4,
                 color='tab:green')
        for a in (ax, axw):
            for k, m in enumerate(r['snapshots']):
                a.axvspan(m['t_start'] - t0, m['t_end'] - t0,
                          color='orange', alpha=0.25,
                          label='snapshot (migrate..completed)'
                          if k == 0 and a is ax else None)
                pw = m['pause_window']
                if pw[0] and pw[1]:
                    a.axvspan(pw[0] - t0, max(pw[1], pw[0] + 0.02) - t0,
                              color='red', alpha=0.7,
                              label='pause (drawn >= 20 ms wide)'
                              if k == 0 and a is ax else None)
            a.grid(True, which='both', alpha=0.3)
        ax.set_yscale('log')
        ax.set_ylim(0.1, 2e5)
        ax.set_ylabel('write latency, us')
        axw.set_ylabel('writes / interval')
        axw.set_xlabel('s since the first snapshot started')
        ax.legend(loc='upper left', fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)


def tl_path(outdir, r):
    return os.path.join(outdir, 'logs', '%s-%dg.tl.gz' %
                        (r['system'], r['ram'] // GIB))


def write_outputs(outdir, meta, results):
    """latency.png, logs/*.tl.gz, results.json and results.md."""
    try:
        plot(results, os.path.join(outdir, 'latency.png'))
        plot_zoom(results, os.path.join(outdir, 'latency-zoom.png'))
    except ImportError as e:  # the numbers must not be lost for a plot
        print('bench: no plots (%s): scripts/install-deps.sh --bench, '
              'then run.py --render --outdir %s' % (e, outdir),
              file=sys.stderr)
    for r in results:       # raw timelines: logs/, not results.json
        tl = r.pop('timeline', None)
        if tl:
            with gzip.open(tl_path(outdir, r), 'wt') as f:
                f.write('host_t,vcpu,writes,max_ns\n')
                for e in tl:
                    f.write('%.6f,%d,%d,%d\n' % e)
    with open(os.path.join(outdir, 'results.json'), 'w') as f:
        json.dump({'meta': meta, 'results': results}, f, indent=1)
    md = '# bench/vm results\n\n`%s`\n\n```\n%s\n```\n\n' \
        '### Summary (a / b = snapshot #1 / #2 of the same VM)\n\n%s\n%s' % (
            meta['command'], json.dumps(meta, indent=1), summary(results),
            table(results))
    for r in results:
        if 'error' in r:
            md += '\n%s %d GiB: FAILED: %s\n' % (r['system'],
                                                r['ram'] // GIB, r['error'])
    with open(os.path.join(outdir, 'results.md'), 'w') as f:
        f.write(md)
    print(md)


def render(outdir):
    """Redo results.md and latency.png from results.json + logs/."""
    with open(os.path.join(outdir, 'results.json')) as f:
        data = json.load(f)
    for r in data['results']:
        try:
            with gzip.open(tl_path(outdir, r), 'rt') as f:
                next(f)
                r['timeline'] = [(float(t), int(v), int(w), int(n)) for
                                 t, v, w, n in (ln.split(',') for ln in f)]
        except FileNotFoundError:
            pass
    write_outputs(outdir, data['meta'], data['results'])


def plot_zoom(results, path, which=-1, span=(-0.3, 3.0)):
    """QEMU and livesnap on one axis per RAM size and backend: the last
    snapshot of each VM, time 0 = the pause."""
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt

    pairs = [p for p in (('qemu', 'livesnap'), ('qemu-anon', 'livesnap-anon'))
             if any(r['system'] in p for r in results)]
    rams = sorted({r['ram'] for r in results})
    if not pairs:
        return
    fig, axes = plt.subplots(
        2 * len(rams), len(pairs), squeeze=False,
        figsize=(7.5 * len(pairs), 5.0 * len(rams)),
        gridspec_kw={'height_ratios': [3, 1] * len(rams)})
    colors = {'qemu': 'tab:red', 'qemu-anon': 'tab:red',
              'livesnap': 'tab:blue', 'livesnap-anon': 'tab:blue'}
    for r in results:
        col = [k for k, p in enumerate(pairs) if r['system'] in p]
        if not col or not r.get('timeline') or not r['snapshots']:
            continue
        row = 2 * rams.index(r['ram'])
        ax, axw = axes[row][col[0]], axes[row + 1][col[0]]
        m = r['snapshots'][which]
        tp = m['t_stop'] or m['t_start']
        pts = [(t - tp, w, ns) for t, _, w, ns in r['timeline']
               if span[0] <= t - tp <= span[1]]
        c = colors[r['system']]
        ax.plot([p[0] for p in pts], [max(p[2], 1) / 1e3 for p in pts],
                lw=0.5, color=c, label='%s: pause %s ms, done at %.2f s' % (
                    r['system'], fmt(m['downtime_ms'], '%.1f'),
                    m['t_end'] - tp))
        axw.plot([p[0] for p in pts], [p[1] for p in pts], lw=0.5, color=c)
        for a in (ax, axw):
            if m['t_end'] - tp <= span[1]:
                a.axvline(m['t_end'] - tp, color=c, ls='--', lw=1)
            a.axvline(0, color='k', lw=0.5)
            a.grid(True, which='both', alpha=0.3)
            a.set_xlim(*span)
        ax.set_yscale('log')
        ax.set_ylim(0.1, 2e6)
        ax.set_ylabel('write latency, us')
        ax.set_title('%s vs %s, %d GiB, snapshot #%d (0 = pause, dashed = '
                     'completed)' % (pairs[col[0]] + (r['ram'] // GIB,
                                                      len(r['snapshots']))),
                     fontsize=9)
        ax.legend(loc='upper right', fontsize=7)
        axw.set_ylabel('writes / interval')
        axw.set_xlabel('s since the pause began')
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)


def parse_size(s):
    m = re.fullmatch(r'(\d+)([GgMm]?)', s)
    if not m:
        raise argparse.ArgumentTypeError('bad size %r (use 2G, 512M)' % s)
    return int(m.group(1)) << (30 if m.group(2) in 'Gg' and m.group(2)
                               else 20)


def main():
    root = os.path.dirname(os.path.dirname(os.path.dirname(
        os.path.abspath(__file__))))
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('--build', default=os.path.join(root, 'build-bench'),
                    help='meson build dir with guest image and livesnap')
    ap.add_argument('--image', help='guest image (default: '
                    'BUILD/guest/livesnap-guest.bin)')
    ap.add_argument('--livesnap', help='livesnap binary (default: '
                    'BUILD/cli/livesnap)')
    ap.add_argument('--qemu', default='qemu-system-x86_64',
                    help='QEMU binary (Debian 7.2)')
    ap.add_argument('--systems', default=','.join(SYSTEMS),
                    help='any of ' + ','.join(SYSTEMS))
    ap.add_argument('--accel', choices=('kvm', 'tcg'),
                    help='vCPU backend of both VMMs: kvm (QEMU -enable-kvm, '
                    'livesnap --accel kvm) or tcg (QEMU -accel tcg, livesnap '
                    '--accel tcg, Unicorn); default kvm when /dev/kvm is '
                    'usable, else tcg')
    ap.add_argument('--qemu-cpu', help='QEMU -cpu (default: host,-arch-'
                    'capabilities under kvm, max under tcg)')
    ap.add_argument('--ram', help='guest RAM sizes, comma-separated (M or '
                    'G; default 2G,8G under kvm, 1G,4G under tcg)')
    ap.add_argument('--vcpus', type=int, default=1,
                    help='vCPUs (pinning needs 1)')
    ap.add_argument('--ws-mib', type=int,
                    help='guest working set per vCPU (ls.ws_mib; default '
                    '256 under kvm, 64 under tcg)')
    ap.add_argument('--mode', default='rand', choices=('rand', 'seq'),
                    help='guest page order (ls.mode)')
    ap.add_argument('--snapshots', type=int, default=2,
                    help='snapshots per VM (the first may pay first-touch '
                    'costs)')
    ap.add_argument('--warmup', type=float, default=4.0,
                    help='s of guest running before the first snapshot')
    ap.add_argument('--before', type=float, default=3.0,
                    help='s of baseline measured before each snapshot')
    ap.add_argument('--after', type=float, default=1.5,
                    help='s recorded after each snapshot')
    ap.add_argument('--gap', type=float, default=1.0,
                    help='s between snapshots (added to --before)')
    ap.add_argument('--boot-timeout', type=float, default=120.0,
                    help='s until the guest workload must run')
    ap.add_argument('--restore-modes', default='lazy,eager',
                    help='livesnap restore modes to time (QEMU: defer)')
    ap.add_argument('--restore-reps', type=int, default=1,
                    help='restores per mode')
    ap.add_argument('--qemu-max-bw', type=int, default=64 * GIB,
                    help='QEMU migrate max-bandwidth, bytes/s')
    ap.add_argument('--ls-strategy', default='copy',
                    help='x-livesnap-strategy: copy, write-first, auto')
    ap.add_argument('--ls-migrate-arg', action='append', default=[],
                    metavar='KEY=JSON', help='extra argument of livesnap\'s '
                    '`migrate` (e.g. x-livesnap-foo=true); repeatable')
    ap.add_argument('--prepopulate', action='store_true',
                    help='what-if: before the first snapshot, read-fault '
                    'all of livesnap-anon\'s guest RAM from outside (huge '
                    'zero pages), as QEMU does for itself')
    ap.add_argument('--no-pin', dest='pin', action='store_false',
                    help='leave threads where the scheduler puts them')
    ap.add_argument('--nice', type=int, default=-20,
                    help='nice increment for the bench and so the VMMs '
                    '(the machine is shared; 0: leave alone)')
    ap.add_argument('--no-rt', dest='rt', action='store_false',
                    help='do not make the pinned vCPU threads SCHED_FIFO')
    ap.add_argument('--snapdir', default='/var/tmp/livesnap-bench',
                    help='snapshot files and QMP sockets (page cache)')
    ap.add_argument('--outdir', default=os.path.join(
        os.path.dirname(os.path.abspath(__file__)), 'results'),
        help='results.md, results.json, plots, logs/')
    ap.add_argument('--keep-snapshots', action='store_true',
                    help='leave the snapshot files in SNAPDIR')
    ap.add_argument('--poll-migrate', type=float, default=0.01,
                    help='s between query-migrate polls')
    ap.add_argument('--render', action='store_true',
                    help='only redo results.md and the plots from '
                    'OUTDIR/results.json and OUTDIR/logs')
    cfg = ap.parse_args()
    if cfg.render:
        render(cfg.outdir)
        return

    check_abi(os.path.join(root, 'guest', 'abi.h'))
    cfg.image = cfg.image or os.path.join(cfg.build, 'guest',
                                          'livesnap-guest.bin')
    cfg.livesnap = cfg.livesnap or os.path.join(cfg.build, 'cli',
                                                'livesnap')
    cfg.ls_migrate_args = {}
    for kv in cfg.ls_migrate_arg:
        k, sep, v = kv.partition('=')
        try:
            cfg.ls_migrate_args[k] = json.loads(v)
        except ValueError:
            sep = None
        if not sep or not k:
            sys.exit('bench: --ls-migrate-arg %r: use KEY=JSON' % kv)
    if cfg.accel is None:
        cfg.accel = 'kvm' if kvm_usable() else 'tcg'
    tcg = cfg.accel == 'tcg'
    if cfg.ram is None:
        cfg.ram = '1G,4G' if tcg else '2G,8G'
    if cfg.ws_mib is None:
        cfg.ws_mib = 64 if tcg else 256
    if cfg.qemu_cpu is None:
        cfg.qemu_cpu = 'max' if tcg else 'host,-arch-capabilities'
    cfg.systems = cfg.systems.split(',')
    cfg.rams = [parse_size(s) for s in cfg.ram.split(',')]
    cfg.restore_modes = cfg.restore_modes.split(',')
    # the rate the guests' rdtsc ticks at (see rdtsc_khz() for TCG)
    cfg.tsc_khz = rdtsc_khz() if tcg else host_tsc_khz()
    cfg.append = 'ls.tsc_khz=%d ls.ws_mib=%d ls.mode=%s ls.cpus=%d ' \
        'ls.print_s=0' % (cfg.tsc_khz, cfg.ws_mib, cfg.mode, cfg.vcpus)
    cfg.host_cpu, cfg.vcpu_cpu = 0, 1
    if cfg.vcpus > 1:
        cfg.pin = False     # two host CPUs: nothing sensible to pin
    for s in cfg.systems:
        if s not in SYSTEMS:
            sys.exit('bench: unknown system %r (use %s)' %
                     (s, ','.join(SYSTEMS)))
    uses_ls = any(s.startswith('livesnap') for s in cfg.systems)
    for p in (cfg.image,) + ((cfg.livesnap,) if uses_ls else ()):
        if not os.path.exists(p):
            sys.exit('bench: %s does not exist (build first: meson setup '
                     '%s && ninja -C %s)' % (p, cfg.build, cfg.build))
    if tcg and uses_ls and cfg.image != os.path.join(
            cfg.build, 'guest', 'livesnap-guest.bin'):
        log('note: livesnap --accel tcg runs its built-in guest, not %s' %
            cfg.image)
    os.makedirs(cfg.snapdir, exist_ok=True)
    os.makedirs(os.path.join(cfg.outdir, 'logs'), exist_ok=True)
    cfg.workdir = cfg.snapdir
    if cfg.pin:
        os.sched_setaffinity(0, {cfg.host_cpu})
    if cfg.nice:
        os.nice(cfg.nice)       # inherited by the VMM processes

    def on_term(signum, frame):
        raise KeyboardInterrupt('signal %d' % signum)
    signal.signal(signal.SIGTERM, on_term)

    load_start = os.getloadavg()
    classes = {'qemu': QemuVm, 'qemu-anon': QemuAnonVm,
               'livesnap': LivesnapVm, 'livesnap-anon': LivesnapAnonVm}
    results = []
    t_run = time.time()
    for ram in cfg.rams:
        for s in cfg.systems:
            try:
                results.append(measure_vm(cfg, classes[s], ram))
            except (RuntimeError, QmpError, OSError) as e:
                log('%s %d GiB FAILED: %s' % (s, ram // GIB, e))
                results.append({'system': s, 'ram': ram, 'error': str(e),
                                'snapshots': [], 'restores': []})
    meta = {'command': ' '.join(shlex.quote(a) for a in sys.argv),
            'date': time.strftime('%Y-%m-%d %H:%M:%S UTC', time.gmtime()),
            'run_s': time.time() - t_run, 'append': cfg.append,
            'accel': cfg.accel, 'qemu_cpu': cfg.qemu_cpu,
            'tsc_khz_from': 'rdtsc vs CLOCK_MONOTONIC' if tcg
            else 'KVM_GET_TSC_KHZ',
            'vcpus': cfg.vcpus, 'pin': cfg.pin, 'rt': cfg.pin and cfg.rt,
            'nice': cfg.nice,
            'qemu_max_bw': cfg.qemu_max_bw, 'tsc_khz': cfg.tsc_khz,
            'ls_strategy': cfg.ls_strategy, 'prepopulate': cfg.prepopulate,
            'ls_migrate_args': cfg.ls_migrate_args,
            'kernel': os.uname().release,
            'loadavg_start': load_start, 'loadavg_end': os.getloadavg(),
            'git': subprocess.run(
                ['git', '-C', root, 'describe', '--always', '--dirty'],
                capture_output=True, text=True).stdout.strip(),
            'qemu_version': subprocess.run(
                [cfg.qemu, '--version'], capture_output=True,
                text=True).stdout.split('\n')[0]}
    write_outputs(cfg.outdir, meta, results)
    log('done in %.0f s' % (time.time() - t_run))


if __name__ == '__main__':
    main()

# SPDX-License-Identifier: MIT
"""Spawning a VMM for the benches (run.py, restore_time.py).

No preexec_fn: with one, Python forks its whole address space instead of
vfork()ing, 10-12 ms here (Popen returned in 10.5-12.1 ms with one,
0.2-1.1 ms without), and that time would land in "spawn to guest
writing". The child takes its CPU from ours, set around the spawn; the
VMMs still alive when the bench exits are killed then.
"""
import atexit
import os
import subprocess

_CHILDREN = []


@atexit.register
def _kill_children():
    for p in _CHILDREN:
        if p.poll() is None:
            p.kill()


def spawn(argv, stderr_path, pin=None):
    """Popen(argv), stdin and stdout to /dev/null, stderr to stderr_path,
    on CPU pin if given (else on the caller's CPUs)."""
    own = os.sched_getaffinity(0)
    if pin is not None:
        os.sched_setaffinity(0, {pin})
    try:
        with open(stderr_path, 'wb') as err:
            proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL,
                                    stdout=subprocess.DEVNULL, stderr=err)
    finally:
        os.sched_setaffinity(0, own)
    _CHILDREN.append(proc)
    return proc

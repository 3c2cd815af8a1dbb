# SPDX-License-Identifier: MIT
"""A small QMP client for the snap tests (standard library only).

QMP is one JSON object per line over a unix socket: a greeting, then a
reply to each command; events ({"event": ...}) may arrive at any time and
are kept in order in self.events until a caller consumes them.
"""
import json
import os
import socket
import time


class QMPError(Exception):
    """An {"error": {"class", "desc"}} reply."""

    def __init__(self, cmd, cls, desc):
        super().__init__("%s: %s: %s" % (cmd, cls, desc))
        self.cls = cls
        self.desc = desc


class QMP:
    def __init__(self, path, timeout=30.0):
        self.path = path
        self.timeout = timeout
        self.events = []   # not yet consumed by wait_event
        self.history = []  # every event, in order
        self._buf = b""
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            self.sock.settimeout(timeout)
            self.sock.connect(path)
            self._handshake()
        except BaseException:
            self.sock.close()
            raise

    def _handshake(self):
        greeting = self._read()
        if "QMP" not in greeting:
            raise RuntimeError("%s: no QMP greeting: %r"
                               % (self.path, greeting))
        self.greeting = greeting
        self.cmd("qmp_capabilities")

    @classmethod
    def connect_when_ready(cls, path, proc=None, timeout=30.0):
        """Waits for the socket to appear (and proc to stay alive)."""
        deadline = time.monotonic() + timeout
        while True:
            if proc is not None and proc.poll() is not None:
                raise RuntimeError("VMM exited (status %d) before its QMP "
                                   "socket was ready" % proc.returncode)
            if os.path.exists(path):
                try:
                    return cls(path)
                except (ConnectionRefusedError, FileNotFoundError):
                    pass
            if time.monotonic() > deadline:
                raise TimeoutError("QMP socket %s not ready in %.0f s"
                                   % (path, timeout))
            time.sleep(0.02)

    def close(self):
        self.sock.close()

    def _read(self):
        while b"\n" not in self._buf:
            data = self.sock.recv(65536)
            if not data:
                raise EOFError("QMP connection closed by the VMM")
            self._buf += data
        line, self._buf = self._buf.split(b"\n", 1)
        return json.loads(line)

    def cmd(self, name, args=None, **kwargs):
        """Runs a command; returns its "return" value or raises QMPError.
        Arguments with dashes go in args; plain ones may be kwargs."""
        req = {"execute": name}
        arguments = dict(args or {})
        arguments.update(kwargs)
        if arguments:
            req["arguments"] = arguments
        self.sock.sendall(json.dumps(req).encode() + b"\n")
        while True:
            msg = self._read()
            if "event" in msg:
                self._got_event(msg)
                continue
            if "error" in msg:
                err = msg["error"]
                raise QMPError(name, err.get("class"), err.get("desc"))
            return msg["return"]

    def _got_event(self, msg):
        self.events.append(msg)
        self.history.append(msg)

    def pump(self, wait=0.0):
        """Reads any events already sent (waiting up to `wait` seconds)."""
        self.sock.settimeout(wait if wait > 0 else 0.000001)
        try:
            while True:
                while b"\n" in self._buf:
                    line, self._buf = self._buf.split(b"\n", 1)
                    msg = json.loads(line)
                    if "event" in msg:
                        self._got_event(msg)
                data = self.sock.recv(65536)
                if not data:
                    raise EOFError("QMP connection closed by the VMM")
                self._buf += data
        except (socket.timeout, BlockingIOError):
            pass
        finally:
            self.sock.settimeout(self.timeout)

    def wait_event(self, name, pred=lambda data: True, timeout=60.0):
        """Returns (and removes) the first event `name` whose data passes
        pred, waiting up to timeout seconds."""
        deadline = time.monotonic() + timeout
        while True:
            for i, ev in enumerate(self.events):
                if ev["event"] == name and pred(ev.get("data", {})):
                    return self.events.pop(i)
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError("no %s event in %.0f s (have: %r)"
                                   % (name, timeout, self.events))
            self.pump(min(left, 0.2))

    def event_statuses(self, name="MIGRATION"):
        """The data.status of every `name` event received so far."""
        try:
            self.pump()
        except EOFError:
            pass  # the VMM has gone: what it sent is all there is
        return [e["data"]["status"] for e in self.history
                if e["event"] == name]

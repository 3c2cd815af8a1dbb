# SPDX-License-Identifier: MIT
"""The QMP client of the VM tests (standard library only).

QMP is one JSON object per line over a unix socket: a greeting, then a
reply to each command; events ({"event": ...}) may arrive at any time.
Events read while waiting for a reply are kept, in order, in self.events
until wait_event consumes them, and in self.history for good.
"""
import json
import socket
import time


class QMPError(Exception):
    """An {"error": {"class", "desc"}} reply (or a refused greeting)."""

    def __init__(self, cmd, cls=None, desc=None):
        super().__init__("%s: %s: %s" % (cmd, cls, desc))
        self.cls = cls
        self.desc = desc


class QMPClosed(QMPError, EOFError):
    """The VMM closed the connection."""

    def __init__(self, what="QMP connection closed by the VMM"):
        super().__init__(what)


class QMP:
    """One client connection. negotiate=False leaves it in capabilities
    negotiation mode and takes any greeting (even a refusal) as is."""

    def __init__(self, path, negotiate=True, timeout=30.0):
        self.path = path
        self.timeout = timeout
        self.events = []   # not yet consumed by wait_event
        self.history = []  # every event, in order
        self._buf = b""
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            self.sock.settimeout(timeout)
            self._connect(path, timeout)
            self.greeting = self.recv()
            if negotiate:
                self._negotiate()
        except BaseException:
            self.sock.close()
            raise

    def _connect(self, path, timeout):
        """connect() that waits while the listen backlog is full: with a
        timeout set, Python's socket is non-blocking inside, and a unix
        socket then fails with EAGAIN where a blocking one would wait."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                return self.sock.connect(path)
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.01)

    def _negotiate(self):
        g = self.greeting
        if g is None:
            raise QMPClosed("%s: closed before its greeting" % self.path)
        if "QMP" not in g:
            err = g.get("error", {})
            raise QMPError("%s: greeting" % self.path, err.get("class"),
                           err.get("desc", repr(g)))
        self.cmd("qmp_capabilities")

    def close(self):
        self.sock.close()

    # -- raw protocol -------------------------------------------------------

    def send_raw(self, data):
        self.sock.sendall(data)

    def _next_line(self):
        """The next whole line, or None once the server closed."""
        while b"\n" not in self._buf:
            data = self.sock.recv(65536)
            if not data:
                return None
            self._buf += data
        line, self._buf = self._buf.split(b"\n", 1)
        return line

    def recv(self):
        """The next message (reply or event) as is; None when the server
        closed the connection."""
        line = self._next_line()
        return None if line is None else json.loads(line)

    def _got_event(self, msg):
        self.events.append(msg)
        self.history.append(msg)

    def recv_reply(self):
        """The next reply; events on the way go to self.events."""
        while True:
            msg = self.recv()
            if msg is None:
                raise QMPClosed()
            if "event" in msg:
                self._got_event(msg)
                continue
            return msg

    # -- commands -----------------------------------------------------------

    def execute(self, name, args=None, id=None):
        """Sends a command; returns the whole reply (error or return)."""
        msg = {"execute": name}
        if args is not None:
            msg["arguments"] = args
        if id is not None:
            msg["id"] = id
        self.send_raw(json.dumps(msg).encode() + b"\n")
        return self.recv_reply()

    def cmd(self, name, args=None, **kwargs):
        """Runs a command; returns its "return" value or raises QMPError.
        Arguments with dashes go in args; plain ones may be kwargs."""
        arguments = dict(args or {})
        arguments.update(kwargs)
        reply = self.execute(name, arguments or None)
        if "error" in reply:
            err = reply["error"]
            raise QMPError(name, err.get("class"), err.get("desc"))
        return reply["return"]

    # -- events -------------------------------------------------------------

    def pump(self, wait=0.0):
        """Reads the events already sent, waiting up to `wait` seconds for
        more; raises QMPClosed (an EOFError) once the server has gone,
        after keeping every event it sent."""
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
                    raise QMPClosed()
                self._buf += data
        except (socket.timeout, BlockingIOError):
            pass
        finally:
            self.sock.settimeout(self.timeout)

    def wait_event(self, name, pred=lambda data: True, timeout=60.0):
        """Returns (and removes) the first event `name` whose data passes
        pred, waiting up to timeout seconds; fails if none comes."""
        deadline = time.monotonic() + timeout
        while True:
            for i, ev in enumerate(self.events):
                if ev["event"] == name and pred(ev.get("data", {})):
                    return self.events.pop(i)
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError("no %s event in %.0f s (have: %r)"
                                     % (name, timeout, self.events))
            try:
                self.pump(min(left, 0.2))
            except QMPClosed:
                if not any(ev["event"] == name and pred(ev.get("data", {}))
                           for ev in self.events):
                    raise AssertionError("QMP closed before a %s event "
                                         "(have: %r)" % (name, self.events))

    def event_statuses(self, name="MIGRATION"):
        """The data.status of every `name` event received so far."""
        try:
            self.pump()
        except QMPClosed:
            pass  # the VMM has gone: what it sent is all there is
        return [e["data"]["status"] for e in self.history
                if e["event"] == name]

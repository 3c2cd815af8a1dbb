#!/usr/bin/python3
# SPDX-License-Identifier: MIT
"""The QMP control socket: protocol, VM control, and bad clients."""
import json
import os
import socket
import stat
import time
import unittest

import lsvm


class QMPTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.vm = lsvm.VM('--cpus', '2', '--mem', '128M',
                         '--cmdline', 'ls.print_s=0').start()
        cls.vm.wait_workload(2)

    @classmethod
    def tearDownClass(cls):
        cls.vm.close()

    def client(self, negotiate=True):
        c = lsvm.QMP(self.vm.qmp_path, negotiate=negotiate)
        self.addCleanup(c.close)
        return c

    def assert_running(self):
        """Counters of every vCPU still grow and the process is alive."""
        self.assertIsNone(self.vm.proc.poll())
        first = self.vm.writes()
        lsvm.wait_until(lambda: all(b > a for a, b in zip(first, self.vm.writes())),
                        lsvm.BOOT_TIMEOUT, 'counters to grow')

    def test_socket_mode(self):
        st = os.stat(self.vm.qmp_path)
        self.assertTrue(stat.S_ISSOCK(st.st_mode))
        self.assertEqual(stat.S_IMODE(st.st_mode), 0o600)

    def test_greeting_and_negotiation(self):
        c = self.client(negotiate=False)
        g = c.greeting
        self.assertEqual(set(g), {'QMP'})
        self.assertEqual(g['QMP']['capabilities'], [])
        self.assertIn('qemu', g['QMP']['version'])
        r = c.execute('query-status', id='early')
        self.assertEqual(r['error']['class'], 'CommandNotFound')
        self.assertEqual(r['id'], 'early')
        r = c.execute('qmp_capabilities', id=7)
        self.assertEqual(r, {'return': {}, 'id': 7})
        r = c.execute('qmp_capabilities')
        self.assertEqual(r['error']['class'], 'CommandNotFound')
        r = c.execute('query-status', id={'x': [1, 2]})
        self.assertEqual(r['id'], {'x': [1, 2]})
        self.assertEqual(r['return']['status'], 'running')
        self.assertIs(r['return']['running'], True)

    def test_errors_keep_vm_running(self):
        c = self.client()
        r = c.execute('no-such-command', id=1)
        self.assertEqual(r['error']['class'], 'CommandNotFound')
        self.assertIn('no-such-command', r['error']['desc'])
        self.assertEqual(r['id'], 1)
        c.send_raw(b'{"execute": "query-status", \n')  # then garbage
        c.send_raw(b'}}}}\n')
        r = c.recv_reply()
        self.assertEqual(r['error']['class'], 'GenericError')
        c.send_raw(b'this is not json\n')
        r = c.recv_reply()
        self.assertEqual(r['error']['class'], 'GenericError')
        c.send_raw(b'[1, 2]\n')
        self.assertEqual(c.recv_reply()['error']['class'], 'GenericError')
        c.send_raw(b'{"execute": 5}\n')
        self.assertEqual(c.recv_reply()['error']['class'], 'GenericError')
        c.send_raw(b'{"execute": "query-status", "bogus": 1}\n')
        self.assertEqual(c.recv_reply()['error']['class'], 'GenericError')
        c.send_raw(b'{"execute": "query-status", "arguments": 3}\n')
        self.assertEqual(c.recv_reply()['error']['class'], 'GenericError')
        # the same connection still works, and so does the VM
        self.assertEqual(c.cmd('query-status')['status'], 'running')
        self.assert_running()

    def test_two_commands_in_one_write(self):
        c = self.client()
        c.send_raw(b'{"execute":"query-status","id":1}{"execute":"query-status","id":2}\r\n')
        self.assertEqual(c.recv_reply()['id'], 1)
        self.assertEqual(c.recv_reply()['id'], 2)

    def test_huge_line(self):
        c = self.client()
        try:
            c.send_raw(b'{"execute": "' + b'x' * (3 << 20))
        except (BrokenPipeError, ConnectionResetError):
            pass  # the server already closed: fine
        # an error then a close, or just a close; never a crash
        try:
            while True:
                m = c.recv()
                if m is None:
                    break
                self.assertEqual(m['error']['class'], 'GenericError')
        except (ConnectionResetError, socket.timeout):
            pass
        self.assertIsNone(self.vm.proc.poll())
        self.assertEqual(self.client().cmd('query-status')['status'], 'running')

    def test_disconnects(self):
        for _ in range(20):
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            s.connect(self.vm.qmp_path)
            if _ % 2:
                s.sendall(b'{"execute": "qmp_capabilities"}\n{"execute": "query-st')
            s.close()
        # a client that sends a command and leaves before the reply
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.connect(self.vm.qmp_path)
        s.sendall(b'{"execute":"qmp_capabilities"}{"execute":"query-cpus-fast"}')
        s.close()
        self.assertEqual(self.client().cmd('query-status')['status'], 'running')
        self.assert_running()

    def test_stop_cont_events_and_clients(self):
        a = self.client()
        b = self.client()
        self.assertEqual(a.cmd('stop'), {})
        a.wait_event('STOP')
        b.wait_event('STOP')  # every negotiated client gets events
        st = b.cmd('query-status')
        self.assertEqual(st, {'status': 'paused', 'running': False, 'singlestep': False})
        w1 = self.vm.writes()
        time.sleep(0.2)
        w2 = self.vm.writes()
        self.assertEqual(w1, w2)  # nothing moves while stopped
        self.assertEqual(a.cmd('stop'), {})  # twice is fine
        self.assertEqual(b.cmd('cont'), {})
        a.wait_event('RESUME')
        b.wait_event('RESUME')
        self.assertEqual(a.cmd('query-status')['status'], 'running')
        lsvm.wait_until(lambda: all(y > x for x, y in zip(w2, self.vm.writes())),
                        lsvm.BOOT_TIMEOUT, 'counters to grow after cont')
        info = a.cmd('query-livesnap-vm')
        self.assertGreaterEqual(info['pauses'], 1)
        self.assertGreater(info['last-downtime-ns'], 0)
        self.assertGreater(info['last-stop-ns'], 0)
        self.assertEqual(info['cpus'], 2)

    def test_too_many_clients(self):
        socks, greetings = [], []
        try:
            for _ in range(20):
                c = lsvm.QMP(self.vm.qmp_path, negotiate=False)
                socks.append(c)
                greetings.append(c.greeting)
        finally:
            for c in socks:
                c.close()
        ok = [g for g in greetings if 'QMP' in g]
        refused = [g for g in greetings if 'error' in g]
        self.assertEqual(len(ok) + len(refused), 20)
        self.assertGreater(len(refused), 0)
        self.assertIn('too many', refused[0]['error']['desc'])
        # every slot is free again once they are gone
        def new_client_works():
            try:
                return self.client().cmd('query-status')
            except (lsvm.QMPError, AssertionError, OSError):
                return None  # the server has not seen every close yet
        lsvm.wait_until(new_client_works, 10, 'a new client')
        self.assert_running()

    def test_query_commands(self):
        names = {c['name'] for c in self.client().cmd('query-commands')}
        for n in ('qmp_capabilities', 'query-status', 'stop', 'cont', 'quit',
                  'query-cpus-fast', 'query-livesnap-guest'):
            self.assertIn(n, names)


class Quit(unittest.TestCase):
    def test_quit(self):
        vm = lsvm.VM('--mem', '128M').start()
        self.addCleanup(vm.close)
        other = lsvm.QMP(vm.qmp_path)
        self.addCleanup(other.close)
        self.assertEqual(vm.qmp.cmd('quit'), {})
        self.assertEqual(vm.wait_exit(), 0)
        for c in (vm.qmp, other):
            ev = c.wait_event('SHUTDOWN')
            self.assertEqual(ev['data'], {'guest': False, 'reason': 'host-qmp-quit'})
            self.assertEqual(set(ev['timestamp']), {'seconds', 'microseconds'})
        self.assertFalse(os.path.exists(vm.qmp_path))

    def test_sigterm(self):
        vm = lsvm.VM('--mem', '128M').start()
        self.addCleanup(vm.close)
        vm.proc.terminate()
        self.assertEqual(vm.wait_exit(), 0)
        ev = vm.qmp.wait_event('SHUTDOWN')
        self.assertEqual(ev['data'], {'guest': False, 'reason': 'host-signal'})


if __name__ == '__main__':
    lsvm.main()

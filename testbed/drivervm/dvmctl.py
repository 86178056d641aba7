#!/usr/bin/env python3
"""Control the Paradice driver VM from tests (Python 3 standard library only).

  dvmctl.py boot [--no-backend] [--timeout S] [--lifetime S] [--json]
        Start the VM in the background (run.sh), wait for "DVM ready" and print the backend endpoint
        (first line, e.g. tcp://127.0.0.1:17000), then boot_s=<seconds from launch to ready> and dir=<state dir>.
  dvmctl.py exec [--init] [--timeout S] CMD...
        Run CMD natively inside the VM and pass on its stdout, stderr and exit status. By default CMD runs with
        the host's /bin/sh in the VM's chroot of the host /usr (v4l2-ctl, evtest, aplay, modetest, ...);
        --init runs it with busybox sh in the initramfs. One argument is a shell command line; several are
        quoted and joined (like ssh).
  dvmctl.py stop       Power the VM off (guest poweroff, then QMP quit, then signals). Safe if it is not running.
  dvmctl.py status     Print whether the VM runs, and its endpoint.
  dvmctl.py qmp JSON   Send one QMP command (e.g. input-send-event to the virtio keyboard), print the reply.
  dvmctl.py bench N    Boot and stop N times; print each boot time and the median.

Global options (before the command): --port N|auto (default $DVM_PORT or 17000) and --dir DIR (default
$DVM_DIR or <repo>/.cache/drivervm/vm-<port>). Every VM has its own port and state dir (sockets, pid file,
console.log, share/), so test runs that pick different ports (or --port auto) cannot collide. With --port auto,
pass the printed dir= to later commands (--dir), which then find the port there.

From Python:  vm = DriverVM(port="auto"); vm.boot(); rc, out, err = vm.exec("v4l2-ctl -d /dev/video0 --info");
vm.stop()   (DriverVM is also a context manager that stops the VM on exit).
"""
import argparse
import base64
import fcntl
import json
import os
import shlex
import signal
import socket
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
CACHE = os.environ.get("DVM_CACHE", os.path.join(REPO, ".cache", "drivervm"))


class DVMError(Exception):
    pass


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _port_free(port):
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
            return True
        except OSError:
            return False


def _alive(pid):
    try:
        os.kill(pid, 0)
        return True
    except ProcessLookupError:
        return False
    except PermissionError:
        return True


class _Reader:
    """Reads the exec channel, giving up if the VM dies or the deadline passes (never blocks forever)."""

    def __init__(self, sock, vm, timeout):
        self.s, self.vm, self.buf = sock, vm, b""
        self.deadline = time.monotonic() + timeout if timeout else None
        sock.settimeout(1)

    def _more(self):
        while True:
            try:
                chunk = self.s.recv(1 << 16)
            except socket.timeout:
                if not self.vm.running():
                    raise DVMError("the VM stopped while a command was running")
                if self.deadline and time.monotonic() > self.deadline:
                    raise DVMError("no reply from the VM's exec server")
                continue
            if not chunk:
                raise DVMError("the exec channel closed (did the VM power off?)")
            self.buf += chunk
            return

    def line(self):
        while b"\n" not in self.buf:
            self._more()
        line, self.buf = self.buf.split(b"\n", 1)
        return line

    def take(self, n):
        while len(self.buf) < n:
            self._more()
        data, self.buf = self.buf[:n], self.buf[n:]
        return data


class DriverVM:
    def __init__(self, port=None, dir=None):
        if dir is None and port in (None, "") and os.environ.get("DVM_DIR"):
            dir = os.environ["DVM_DIR"]
        if port in (None, ""):
            port = os.environ.get("DVM_PORT") or None
        if port is None and dir and os.path.exists(os.path.join(dir, "port")):
            port = open(os.path.join(dir, "port")).read().strip()   # a VM booted earlier with --port auto
        if port in (None, ""):
            port = 17000
        self.port = _free_port() if port == "auto" else int(port)
        self.dir = os.path.abspath(dir or os.environ.get("DVM_DIR") or os.path.join(CACHE, f"vm-{self.port}"))
        self.endpoint = f"tcp://127.0.0.1:{self.port}"
        self.boot_s = None

    # --- paths and state -------------------------------------------------------------------------------
    def _p(self, name):
        return os.path.join(self.dir, name)

    def pid(self):
        try:
            pid = int(open(self._p("qemu.pid")).read().strip())
        except (OSError, ValueError):
            return None
        return pid if _alive(pid) else None

    def running(self):
        return self.pid() is not None

    def console(self):
        try:
            with open(self._p("console.log"), "rb") as f:
                return f.read().decode(errors="replace").replace("\r", "")
        except OSError:
            return ""

    def _tail(self, name, n=25):
        try:
            lines = open(self._p(name), errors="replace").read().replace("\r", "").splitlines()
        except OSError:
            return ""
        return "\n".join(f"  {name}: {l}" for l in lines[-n:])

    # --- boot --------------------------------------------------------------------------------------------
    def boot(self, backend=True, timeout=240, lifetime=3600, progress=None):
        """Start the VM in the background and wait until it is ready. Returns the boot time in seconds."""
        if self.running():
            raise DVMError(f"a VM already runs with state dir {self.dir} (pid {self.pid()}); stop it first")
        if not _port_free(self.port):
            raise DVMError(f"127.0.0.1:{self.port} is in use; pick another --port (or --port auto)")
        os.makedirs(self.dir, exist_ok=True)
        for f in ("console.log", "qemu.pid", "run.log"):
            try:
                os.unlink(self._p(f))
            except FileNotFoundError:
                pass
        with open(self._p("port"), "w") as f:
            f.write(f"{self.port}\n")
        env = dict(os.environ, DVM_PORT=str(self.port), DVM_DIR=self.dir, DVM_LIFETIME=str(lifetime))
        cmd = [os.path.join(HERE, "run.sh")] + ([] if backend else ["--no-backend"])
        t0 = time.monotonic()
        # A session of its own: the VM outlives this command (the lifetime limit in run.sh is the safety net).
        self.proc = subprocess.Popen(cmd, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                     stderr=open(self._p("run.log"), "w"), start_new_session=True)
        with open(self._p("run.pid"), "w") as f:
            f.write(f"{self.proc.pid}\n")
        seen = 0
        while True:
            text = self.console()
            for line in text.splitlines()[seen:]:
                if line.startswith("DVM ") and progress:
                    progress(f"+{time.monotonic() - t0:.1f}s {line}")
            seen = len(text.splitlines())
            ready = [l for l in text.splitlines() if l.startswith("DVM ready")]
            if ready:
                self.boot_s = time.monotonic() - t0
                if backend and "backend=1" not in ready[0]:
                    why = self._tail("share/backend.log")
                    self.stop()
                    raise DVMError(f"the VM booted but paradice-backend did not start:\n{why}")
                return self.boot_s
            if self.proc.poll() is not None:
                raise DVMError(f"the VM exited (rc={self.proc.returncode}) before it was ready:\n"
                               f"{self._tail('run.log')}\n{self._tail('console.log')}")
            if time.monotonic() - t0 > timeout:
                self.stop()
                raise DVMError(f"the VM was not ready after {timeout} s:\n{self._tail('console.log')}")
            time.sleep(0.05)

    # --- exec ---------------------------------------------------------------------------------------------
    def exec(self, cmd, init=False, timeout=0):
        """Run a shell command line in the VM. Returns (rc, stdout bytes, stderr bytes)."""
        if isinstance(cmd, (list, tuple)):
            cmd = " ".join(shlex.quote(c) for c in cmd)
        if not self.running():
            raise DVMError(f"no VM runs with state dir {self.dir}")
        req_id = f"{os.getpid()}.{time.monotonic_ns()}"
        b64 = base64.b64encode(cmd.encode()).decode()
        line = f"EXEC {req_id} {'init' if init else 'host'} {int(timeout)} {b64}\n".encode()
        # one request at a time per VM: the guest serves them in turn, and QEMU takes one client per socket
        with open(self._p("exec.lock"), "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            with socket.socket(socket.AF_UNIX) as s:
                s.connect(self._p("ctl.sock"))
                s.sendall(line)
                r = _Reader(s, self, timeout + 30 if timeout else None)
                while True:
                    parts = r.line().decode(errors="replace").split()
                    if parts[:2] == ["DVM-EXEC", req_id]:     # anything else is a stale reply: skip it
                        break
                kv = dict(p.split("=", 1) for p in parts[2:])
                out = r.take(int(kv["out"]))
                err = r.take(int(kv["err"]))
                return int(kv["rc"]), out, err

    # --- stop ---------------------------------------------------------------------------------------------
    def qmp(self, *cmds):
        with socket.socket(socket.AF_UNIX) as s:
            s.settimeout(10)
            s.connect(self._p("qmp.sock"))
            f = s.makefile("rw")
            f.readline()                                       # greeting
            replies = []
            for c in ({"execute": "qmp_capabilities"},) + cmds:
                f.write(json.dumps(c) + "\n")
                f.flush()
                while True:
                    r = f.readline()
                    if not r:
                        replies.append({"closed": True})
                        break
                    r = json.loads(r)
                    if "return" in r or "error" in r:
                        replies.append(r)
                        break
            return replies[1:]

    def _wait_gone(self, pid, seconds):
        end = time.monotonic() + seconds
        while _alive(pid) and time.monotonic() < end:
            time.sleep(0.05)
        return not _alive(pid)

    def stop(self):
        """Power the VM off; escalate to QMP quit and signals if the guest does not respond."""
        pid = self.pid()
        how = "not running"
        if pid:
            how = "poweroff"
            try:
                with socket.socket(socket.AF_UNIX) as s:
                    s.settimeout(5)
                    s.connect(self._p("ctl.sock"))
                    s.sendall(b"POWEROFF stop\n")
                    s.makefile("rb").readline()                # "DVM-BYE stop" (or EOF)
            except OSError:
                pass
            if not self._wait_gone(pid, 10):
                how = "qmp quit"
                try:
                    self.qmp({"execute": "quit"})
                except (OSError, ValueError):
                    pass
                if not self._wait_gone(pid, 5):
                    how = "SIGTERM"
                    os.kill(pid, signal.SIGTERM)
                    if not self._wait_gone(pid, 5):
                        how = "SIGKILL"
                        os.kill(pid, signal.SIGKILL)
                        self._wait_gone(pid, 5)
        # the run.sh wrapper exits right after QEMU; reap it if we started it
        if getattr(self, "proc", None) is not None:
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        else:
            try:
                rpid = int(open(self._p("run.pid")).read())
                self._wait_gone(rpid, 5)
            except (OSError, ValueError):
                pass
        for f in ("qmp.sock", "ctl.sock", "run.pid"):
            try:
                os.unlink(self._p(f))
            except FileNotFoundError:
                pass
        return how

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--port", help="host port of the backend, or 'auto' (default $DVM_PORT or 17000)")
    ap.add_argument("--dir", help="state dir of this VM (default $DVM_DIR or <repo>/.cache/drivervm/vm-PORT)")
    sub = ap.add_subparsers(dest="cmd", required=True)
    b = sub.add_parser("boot")
    b.add_argument("--no-backend", action="store_true")
    b.add_argument("--timeout", type=float, default=240)
    b.add_argument("--lifetime", type=int, default=3600, help="kill QEMU after this many seconds (0 = never)")
    b.add_argument("--json", action="store_true")
    b.add_argument("-q", "--quiet", action="store_true", help="no progress on stderr")
    e = sub.add_parser("exec")
    e.add_argument("--init", action="store_true", help="busybox sh in the initramfs instead of the host userland")
    e.add_argument("--timeout", type=int, default=0, help="kill the command after this many seconds")
    e.add_argument("command", nargs=argparse.REMAINDER)
    sub.add_parser("stop")
    sub.add_parser("status")
    q = sub.add_parser("qmp")
    q.add_argument("json")
    n = sub.add_parser("bench")
    n.add_argument("n", type=int, nargs="?", default=3)
    n.add_argument("--no-backend", action="store_true")
    a = ap.parse_args(argv)

    vm = DriverVM(a.port, a.dir)
    try:
        if a.cmd == "boot":
            note = None if a.quiet else (lambda m: print(f"dvmctl: {m}", file=sys.stderr, flush=True))
            if note:
                note(f"booting (state {vm.dir}, port {vm.port})")
            t = vm.boot(backend=not a.no_backend, timeout=a.timeout, lifetime=a.lifetime, progress=note)
            if a.json:
                print(json.dumps({"endpoint": vm.endpoint, "boot_s": round(t, 2), "dir": vm.dir, "port": vm.port}))
            else:
                print(vm.endpoint)
                print(f"boot_s={t:.2f}")
                print(f"dir={vm.dir}")
        elif a.cmd == "exec":
            cmd = a.command[1:] if a.command[:1] == ["--"] else a.command
            if not cmd:
                ap.error("exec needs a command")
            rc, out, err = vm.exec(cmd[0] if len(cmd) == 1 else cmd, init=a.init, timeout=a.timeout)
            sys.stdout.buffer.write(out)
            sys.stdout.flush()
            sys.stderr.buffer.write(err)
            return rc
        elif a.cmd == "stop":
            print(f"dvmctl: stopped ({vm.stop()})", file=sys.stderr)
        elif a.cmd == "status":
            pid = vm.pid()
            print(f"running pid={pid} {vm.endpoint} dir={vm.dir}" if pid else f"stopped dir={vm.dir}")
            return 0 if pid else 3
        elif a.cmd == "qmp":
            if not vm.running():
                raise DVMError(f"no VM runs with state dir {vm.dir}")
            print(json.dumps(vm.qmp(json.loads(a.json))[0]))
        elif a.cmd == "bench":
            times = []
            for i in range(a.n):
                t = vm.boot(backend=not a.no_backend)
                how = vm.stop()
                times.append(t)
                print(f"boot {i + 1}: {t:.2f} s (stopped by {how})", flush=True)
            print(f"median {statistics.median(times):.2f} s, min {min(times):.2f} s, max {max(times):.2f} s")
    except DVMError as ex:
        print(f"dvmctl: error: {ex}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

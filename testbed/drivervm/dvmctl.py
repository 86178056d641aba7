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
  dvmctl.py --role guest boot [--daemon ARGS]... [--expect PATHS]
        A guest VM (run.sh --role guest): no virtual devices; each --daemon runs `paradice guest ARGS` in it at
        boot, and it is ready once those frontends have made the nodes PATHS (space-separated).
  dvmctl.py pair boot|stop|bench N
        A driver VM and a guest VM whose frontend serves the driver VM's backend (through the host: the guest
        reaches it at tcp://10.0.2.2:<driver port>), booted side by side. --dir is the pair's folder (default
        <repo>/.cache/drivervm/pair-<driver port>), holding the two VMs' state dirs driver/ and guest/; `exec`
        with --dir PAIR/guest runs in the guest VM. boot prints the driver VM's endpoint, then driver_dir=,
        guest_dir=, driver_boot_s=, guest_boot_s= and pair_s= (launch to both ready).

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
    def __init__(self, port=None, dir=None, role="driver"):
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
        if role not in ("driver", "guest"):
            raise DVMError(f"unknown role {role} (driver or guest)")
        self.role = role

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
    def boot(self, backend=True, timeout=240, lifetime=3600, progress=None, daemons=(), expect=()):
        """Start the VM in the background and wait until it is ready. Returns the boot time in seconds.
        A guest VM runs `paradice guest` with each of `daemons` (argument strings) and is ready once the
        nodes `expect` are there."""
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
        env = dict(os.environ, DVM_PORT=str(self.port), DVM_DIR=self.dir, DVM_LIFETIME=str(lifetime), DVM_ROLE=self.role,
                   DVM_GUEST_DAEMONS="\n".join(daemons), DVM_GUEST_EXPECT=" ".join(expect))
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
                if self.role == "driver" and backend and "backend=1" not in ready[0]:
                    why = self._tail("share/backend.log")
                    self.stop()
                    raise DVMError(f"the VM booted but paradice-backend did not start:\n{why}")
                if self.role == "guest" and daemons and "guest=ok" not in ready[0]:
                    why = "\n".join(self._tail(f"share/guest-{i + 1}.log") for i in range(len(daemons)))
                    missing = [l for l in text.splitlines() if l.startswith("DVM guest-missing")]
                    self.stop()
                    raise DVMError(f"the guest VM booted but its frontends did not make their nodes "
                                   f"({missing[0] if missing else 'no nodes'}):\n{why}")
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


# What a guest VM's frontend has made once the driver VM's devices are all there (one node of each kind).
PAIR_EXPECT = ("/dev/video0", "/dev/video3", "/dev/media0", "/dev/dri/card0", "/dev/dri/card2", "/dev/dri/renderD128",
               "/dev/snd/controlC1", "/dev/snd/pcmC1D0p", "/dev/uinput", "/dev/input/event0")


class VMPair:
    """A driver VM and a guest VM whose `paradice guest` serves the driver VM's devices as its own nodes."""

    def __init__(self, dir=None, driver_port="auto", guest_port="auto"):
        self.driver = DriverVM(driver_port, None)
        self.dir = os.path.abspath(dir or os.path.join(CACHE, f"pair-{self.driver.port}"))
        self.driver = DriverVM(self.driver.port, os.path.join(self.dir, "driver"))
        self.guest = DriverVM(guest_port, os.path.join(self.dir, "guest"), role="guest")
        self.guest_backend = f"tcp://10.0.2.2:{self.driver.port}"
        self.pair_s = None

    @classmethod
    def existing(cls, dir):
        """The pair booted earlier in `dir` (for stop)."""
        pair = cls.__new__(cls)
        pair.dir = os.path.abspath(dir)
        pair.driver = DriverVM(None, os.path.join(pair.dir, "driver"))
        pair.guest = DriverVM(None, os.path.join(pair.dir, "guest"), role="guest")
        return pair

    def boot(self, timeout=240, lifetime=3600, progress=None):
        """Boots both at once (the guest's frontend retries until the driver VM's backend listens)."""
        import threading
        errors = []

        def one(vm, **kw):
            try:
                vm.boot(timeout=timeout, lifetime=lifetime,
                        progress=(lambda m: progress(f"{vm.role}: {m}")) if progress else None, **kw)
            except DVMError as e:
                errors.append(f"{vm.role} VM: {e}")

        t0 = time.monotonic()
        threads = [threading.Thread(target=one, args=(self.driver,)),
                   threading.Thread(target=one, args=(self.guest,),
                                    kwargs=dict(daemons=[f"--backend {self.guest_backend} --plain-tcp"], expect=PAIR_EXPECT))]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        self.pair_s = time.monotonic() - t0
        if errors:
            self.stop()
            raise DVMError("\n".join(errors))
        return self.pair_s

    def stop(self):
        return f"guest {self.guest.stop()}, driver {self.driver.stop()}"

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--port", help="host port of the backend, or 'auto' (default $DVM_PORT or 17000)")
    ap.add_argument("--dir", help="state dir of this VM (default $DVM_DIR or <repo>/.cache/drivervm/vm-PORT)")
    ap.add_argument("--role", default="driver", choices=["driver", "guest"], help="the VM's role (for boot)")
    sub = ap.add_subparsers(dest="cmd", required=True)
    b = sub.add_parser("boot")
    b.add_argument("--no-backend", action="store_true")
    b.add_argument("--timeout", type=float, default=240)
    b.add_argument("--lifetime", type=int, default=3600, help="kill QEMU after this many seconds (0 = never)")
    b.add_argument("--json", action="store_true")
    b.add_argument("-q", "--quiet", action="store_true", help="no progress on stderr")
    b.add_argument("--daemon", action="append", default=[], help="guest role: arguments of one `paradice guest`")
    b.add_argument("--expect", default="", help="guest role: the nodes its frontends make (space-separated)")
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
    p = sub.add_parser("pair")
    p.add_argument("action", choices=["boot", "stop", "bench"])
    p.add_argument("n", type=int, nargs="?", default=3, help="bench: how many boots")
    p.add_argument("--timeout", type=float, default=240)
    p.add_argument("--lifetime", type=int, default=3600)
    a = ap.parse_args(argv)

    note = (lambda m: print(f"dvmctl: {m}", file=sys.stderr, flush=True))
    try:
        if a.cmd == "pair":
            return pair_command(a, note)
        vm = DriverVM(a.port, a.dir, role=a.role)
        if a.cmd == "boot":
            note = None if a.quiet else note
            if note:
                note(f"booting (state {vm.dir}, port {vm.port}, role {vm.role})")
            t = vm.boot(backend=not a.no_backend, timeout=a.timeout, lifetime=a.lifetime, progress=note,
                        daemons=a.daemon, expect=a.expect.split())
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


def pair_command(a, note):
    if a.action == "stop":
        if not a.dir:
            raise DVMError("pair stop needs the pair's --dir (printed by pair boot)")
        print(f"dvmctl: stopped ({VMPair.existing(a.dir).stop()})", file=sys.stderr)
        return 0
    rounds = a.n if a.action == "bench" else 1
    times = []
    for i in range(rounds):
        pair = VMPair(a.dir, driver_port=a.port or "auto")
        note(f"booting a driver VM (port {pair.driver.port}) and a guest VM (port {pair.guest.port}) in {pair.dir}")
        t = pair.boot(timeout=a.timeout, lifetime=a.lifetime, progress=note)
        if a.action == "boot":
            print(pair.driver.endpoint)
            print(f"driver_dir={pair.driver.dir}")
            print(f"guest_dir={pair.guest.dir}")
            print(f"driver_boot_s={pair.driver.boot_s:.2f}")
            print(f"guest_boot_s={pair.guest.boot_s:.2f}")
            print(f"pair_s={t:.2f}")
            print(f"dir={pair.dir}")
            return 0
        how = pair.stop()
        times.append((t, pair.driver.boot_s, pair.guest.boot_s))
        print(f"pair boot {i + 1}: {t:.2f} s (driver {pair.driver.boot_s:.2f} s, guest with its frontend "
              f"{pair.guest.boot_s:.2f} s; stopped: {how})", flush=True)
    pairs = [t for t, _, _ in times]
    print(f"median {statistics.median(pairs):.2f} s, min {min(pairs):.2f} s, max {max(pairs):.2f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/env python3
"""Wall times of real clients in the guest VM (on its Paradice nodes, no LD_PRELOAD) against the same clients
natively in the driver VM, in one run of one VM pair (dvmctl.py's VMPair), as BENCHMARKS.md records them.

  testbed/drivervm/guest-bench.py [--runs N] [--flip-seconds S]

Each command runs alternately natively and in the guest VM, N times each (default 3); a run's time is taken
inside its VM (date +%s%N before and after), so the exec channel's own cost is not in it. Prints one row per
command: native median, guest VM median, their ratio, and what the command reported (compliance totals);
then the vkms page-flip rate (modetest -v) natively and in the guest VM. Needs what the guest VM suites need:
testbed/drivervm/setup.sh, the release backend, CLI and daemon (scripts/test.sh builds them).
"""
import argparse
import os
import re
import statistics
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from dvmctl import VMPair  # noqa: E402

COMMANDS = [
    ("v4l2-ctl -d /dev/video0 --info", None),
    ("v4l2-compliance -d /dev/video0", r"Total for .*"),
    ("v4l2-compliance -d /dev/video0 -s10", r"Total for .*"),
    ("v4l2-ctl -d /dev/video0 --stream-mmap --stream-count=50", None),
    ("modetest -M virtio_gpu -c -e -p", None),
    ("aplay -l", None),
    ("amixer -c 1 contents", None),
]


def timed(vm, command, timeout=600):
    """Seconds the command took inside the VM, and its output."""
    script = 'a=$(date +%%s%%N); %s > /tmp/bench.out 2>&1; b=$(date +%%s%%N); echo "T $a $b"; cat /tmp/bench.out' % command
    rc, out, err = vm.exec(script, timeout=timeout)
    text = out.decode(errors="replace")
    m = re.search(r"^T (\d+) (\d+)$", text, re.M)
    if rc != 0 or not m:
        raise SystemExit("%s: rc=%s %s %s" % (command, rc, text[-400:], err.decode(errors="replace")[-400:]))
    return (int(m.group(2)) - int(m.group(1))) / 1e9, text


def flip_rates(vm, seconds):
    listing = vm.exec("modetest -M vkms -c -p", timeout=60)[1].decode(errors="replace")
    connector = re.search(r"^Connectors:\n.*\n(\d+)\s+\d+\s+connected", listing, re.M)
    crtc = re.search(r"^CRTCs:\n.*\n(\d+)\s", listing, re.M)
    if not connector or not crtc:
        raise SystemExit("no vkms connector/CRTC in:\n" + listing)
    command = "sleep %d | modetest -M vkms -s %s@%s:1024x768 -v 2>&1" % (seconds, connector.group(1), crtc.group(1))
    out = vm.exec(command, timeout=seconds + 120)[1].decode(errors="replace")
    return [float(x) for x in re.findall(r"freq: ([0-9.]+)Hz", out)]


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--flip-seconds", type=int, default=10)
    a = ap.parse_args()
    with VMPair() as pair:
        pair.boot()
        driver, guest = pair.driver, pair.guest
        print("| client | native (driver VM) | guest VM | ratio | reported |")
        print("|---|---|---|---|---|")
        for command, report in COMMANDS:
            native, inguest, said = [], [], ""
            for _ in range(a.runs):
                t, out = timed(driver, command)
                native.append(t)
                n_said = re.findall(report, out)[-1] if report else ""
                t, out = timed(guest, command)
                inguest.append(t)
                g_said = re.findall(report, out)[-1] if report else ""
                said = "native: %s; guest VM: %s" % (n_said, g_said) if report else ""
            n, g = statistics.median(native), statistics.median(inguest)
            print("| `%s` | %.2f s | %.2f s | %.1f× | %s |" % (command, n, g, g / n, said))
        native = flip_rates(driver, a.flip_seconds)
        inguest = flip_rates(guest, a.flip_seconds)
        if native and inguest:
            print("vkms page flips (modetest -v, %d s): native median %.1f Hz over %d reports, guest VM median %.1f Hz "
                  "over %d reports (%.0f %%)" % (a.flip_seconds, statistics.median(native), len(native),
                                                 statistics.median(inguest), len(inguest),
                                                 100 * statistics.median(inguest) / statistics.median(native)))
        else:
            print("vkms page flips: no rate (native %s, guest VM %s)" % (native, inguest))


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""ALSA period wake-up latency, native in the driver VM against forwarded from the host, in one run.

Builds alsa-wakeup.c into the VM's share folder, then runs it alternately natively in the VM and on the
host through `paradice run` against the VM's backend, on snd-dummy (hw:Dummy,0,0), and prints both.

  testbed/drivervm/alsa_wakeup_bench.py [--paradice .build/release/paradice] [--rounds 3] [--periods 200]
      [--dir DIR]   use a VM already booted with dvmctl.py (otherwise one is booted on a free port and stopped)
"""
import argparse, os, subprocess, sys, time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from dvmctl import DriverVM  # noqa: E402


def figures(line):
    return dict(part.split("=", 1) for part in line.split() if "=" in part)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--paradice", default=os.path.join(HERE, "../../.build/release/paradice"))
    ap.add_argument("--dir", help="state dir of a running VM")
    ap.add_argument("--device", default="hw:Dummy,0,0")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--periods", type=int, default=200)
    ap.add_argument("--period-frames", type=int, default=1024)
    a = ap.parse_args()

    vm = DriverVM(dir=a.dir) if a.dir else DriverVM(port="auto")
    owned = not a.dir
    if owned:
        vm.boot(progress=lambda m: print(m, file=sys.stderr))
    try:
        program = os.path.join(vm.dir, "share", "alsa-wakeup")
        subprocess.run(["cc", "-O2", "-o", program, os.path.join(HERE, "alsa-wakeup.c"), "-lasound"], check=True)
        arguments = [a.device, str(a.periods), str(a.period_frames)]
        rows = []
        for _ in range(a.rounds):
            rc, out, err = vm.exec(["/share/alsa-wakeup"] + arguments, timeout=300)
            if rc != 0:
                sys.exit(f"native run failed: {err.decode(errors='replace')}")
            rows.append(("native (in the VM)", figures(out.decode())))
            r = subprocess.run([a.paradice, "run", "--backend", vm.endpoint, "--plain-tcp", "--", program] + arguments,
                               capture_output=True, text=True, timeout=300)
            if r.returncode != 0:
                sys.exit(f"forwarded run failed: {r.stderr}")
            rows.append(("forwarded (host → VM)", figures(r.stdout)))
        f = rows[0][1]
        print(f"ALSA period wake-up latency on {a.device}: {f['rate']} Hz, {f['period_frames']}-frame periods "
              f"({f['period_us']} µs), {a.periods} wake-ups per run, {a.rounds} rounds")
        print("| run | median | p90 | max | xruns |")
        print("|---|---|---|---|---|")
        for name, f in rows:
            print(f"| {name} | {f['median_us']} µs | {f['p90_us']} µs | {f['max_us']} µs | {f['xruns']} |")
    finally:
        if owned:
            vm.stop()


if __name__ == "__main__":
    main()

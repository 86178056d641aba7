#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0
#
# Kernel/paradice/tests/run-in-vm.sh — builds paradice.ko and abi-test, boots a driver VM without its
# backend, loads the module there, runs the ABI test as root, checks the kernel log for splats and that
# the module unloads, and stops the VM. One line per check; exit status nonzero on any failure.
#
#   PDK_DVM_DIR=DIR  use the driver VM already running with that state dir (not booted, not stopped)
#   PDK_KV=KV        kernel release (default: build.sh's)
# Needs the driver VM's cache (testbed/drivervm/setup.sh). About 1 min (boot ~12 s, test ~20 s under TCG).
set -uo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
REPO=$(cd "$HERE/../../.." && pwd)
DVM="python3 $REPO/testbed/drivervm/dvmctl.py"
fail=0
say() { echo "$*"; }
bad() { echo "FAIL - $*"; fail=1; }

ko=$("$HERE/../build.sh" ${PDK_KV:-} | tail -n 1) || { bad "paradice.ko builds"; exit 1; }
say "ok - paradice.ko builds ($ko)"
OUT=$(dirname "$ko")
if ! gcc -O2 -Wall -Wextra -Werror -I"$REPO/Sources/CParadice/include" -o "$OUT/abi-test" "$HERE/abi-test.c" -pthread; then
  bad "abi-test builds"; exit 1
fi
say "ok - abi-test builds"
if ! gcc -m32 -static -nostdlib -ffreestanding -fno-pic -fno-stack-protector -O2 -Wall -Werror \
     -o "$OUT/compat-ioctl" "$HERE/compat-ioctl.c"; then
  bad "compat-ioctl (the 32-bit caller) builds"; exit 1
fi

booted=0
if [ -n "${PDK_DVM_DIR:-}" ]; then
  DIR=$PDK_DVM_DIR
else
  bootout=$($DVM --port auto boot --no-backend 2>"$OUT/boot.err") || { cat "$OUT/boot.err" >&2; bad "driver VM boots"; exit 1; }
  DIR=$(printf '%s\n' "$bootout" | sed -n 's/^dir=//p')
  booted=1
  say "ok - driver VM boots ($(printf '%s\n' "$bootout" | grep boot_s))"
fi
stop_vm() { [ $booted = 1 ] && $DVM --dir "$DIR" stop >/dev/null 2>&1; }
trap stop_vm EXIT
vm() { $DVM --dir "$DIR" exec "$@"; }

cp "$ko" "$OUT/abi-test" "$OUT/compat-ioctl" "$DIR/share/" || { bad "copy into the VM's share"; exit 1; }
vm --init 'rmmod paradice 2>/dev/null; dmesg -c >/dev/null' >/dev/null 2>&1
if vm --init 'insmod /share/paradice.ko' ; then say "ok - insmod paradice.ko"; else bad "insmod paradice.ko"; exit 1; fi

vm --timeout 300 /share/abi-test /share/compat-ioctl
rc=$?
[ $rc = 0 ] || bad "abi-test exit status $rc"

if vm --init 'rmmod paradice'; then say "ok - rmmod paradice (nothing left open)"; else bad "rmmod paradice"; fi
# Nothing of it stays in sysfs (a glue directory left behind would make the next load's nodes fail), and it
# loads and passes again.
left=$(vm --init 'ls -d /sys/devices/virtual/paradice /sys/class/paradice /sys/devices/virtual/pdktest* 2>/dev/null')
if [ -z "$left" ]; then say "ok - nothing of the module is left in sysfs"; else bad "left in sysfs after rmmod: $left"; fi
if vm --init 'insmod /share/paradice.ko' && vm --timeout 300 /share/abi-test /share/compat-ioctl > "$OUT/abi-test-again.log" 2>&1; then
  say "ok - loaded again, abi-test passes again"
else
  tail -n 20 "$OUT/abi-test-again.log"; bad "abi-test after reloading the module"
fi
vm --init 'rmmod paradice' || bad "rmmod paradice after the second run"
log=$(vm --init 'dmesg')
if printf '%s\n' "$log" | grep -E 'WARNING|BUG|Call Trace|lockdep|general protection|Oops|refcount_t|list_(add|del) corruption|INFO: task' ; then
  bad "kernel log has a splat (above)"
else
  say "ok - kernel log has no warning, BUG or lockdep splat"
fi
printf '%s\n' "$log" | grep paradice | sed 's/^/   dmesg: /'
[ $fail = 0 ] && say "PASS: run-in-vm" || say "FAIL: run-in-vm"
exit $fail

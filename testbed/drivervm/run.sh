#!/usr/bin/env bash
# Boot the Paradice driver VM under QEMU (TCG) with paradice-backend serving the VM's devices.
#
#   testbed/drivervm/run.sh                     boot; serial console on this terminal (Ctrl-A x quits QEMU,
#                                               'exit' in the console shell powers off)
#   testbed/drivervm/run.sh --run 'CMD'         boot, run CMD natively in the VM (host userland chroot), print
#                                               its output between "DVM run-begin" and "DVM run-end rc=N", power off
#   testbed/drivervm/run.sh --poweroff          boot to "DVM ready", then power off (boot-time measurement)
#   testbed/drivervm/run.sh --no-backend        do not start paradice-backend
#   testbed/drivervm/run.sh stop                stop the VM of this DVM_PORT / DVM_DIR (see dvmctl.py stop)
#   testbed/drivervm/run.sh --role guest        a guest VM instead: the same kernel and initramfs without the
#                                               virtual devices and their drivers, with the Paradice module and
#                                               frontend (paradice guest) in its share; it reaches backends on
#                                               the host's loopback as 10.0.2.2 (tcp://10.0.2.2:17000 is the
#                                               driver VM's). See DVM_GUEST_* below and dvmctl.py pair.
#
# The backend listens on guest port 7000, forwarded from 127.0.0.1:$DVM_PORT on the host:
#   paradice devices --backend tcp://127.0.0.1:17000
# For tests, dvmctl.py runs this in the background and adds exec/stop.
#
# Environment:
#   DVM_PORT=17000        host TCP port of the backend (bound to 127.0.0.1 only)
#   DVM_DIR=dir           per-VM state: qmp.sock, ctl.sock (exec channel), serial.sock (the virtio-serial port
#                         "paradice": serial:$DVM_DIR/serial.sock on the host, serial:/dev/virtio-ports/paradice
#                         in the VM, where the driver VM's backend listens), qemu.pid, console.log, share/
#                         (default $DVM_CACHE/vm-$DVM_PORT; two VMs need different ports and dirs)
#   DVM_BACKEND=path      paradice-backend to run (default <repo>/.build/release/paradice-backend, built with
#                         swift build -c release --static-swift-stdlib --product paradice-backend); "none" = no backend
#   DVM_SPECS=dir         spec folder (default <repo>/Specs)
#   DVM_BACKEND_ARGS=...  extra backend arguments (e.g. "--log-level debug")
#   DVM_MEM=1024 DVM_SMP=1 DVM_LIFETIME=0 (seconds before QEMU is killed; 0 = never) DVM_QEMU_EXTRA=...
#   DVM_HOSTFWD_EXTRA=,hostfwd=tcp:127.0.0.1:P-:7001   more of the network's forwarded ports (e.g. for an
#                         echo peer in the VM: BENCHMARKS.md, "Raw round trips into the VM")
#   DVM_CACHE=dir         where setup.sh put the kernel and initramfs (default <repo>/.cache/drivervm)
#   DVM_ROLE=driver|guest the VM's role (--role)
# Guest role only:
#   DVM_GUEST_BIN=dir     where paradice (built with --static-swift-stdlib) and paradice-guestd are
#                         (default <repo>/.build/release)
#   DVM_GUEST_DAEMONS=... one `paradice guest` per line, its arguments (e.g. "--backend tcp://10.0.2.2:17000");
#                         the VM is ready once they have made the nodes of DVM_GUEST_EXPECT (paths, spaces)
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$HERE/../.." && pwd)
if [ "${1:-}" = stop ]; then exec python3 "$HERE/dvmctl.py" stop; fi

CACHE=${DVM_CACHE:-$REPO/.cache/drivervm}
PORT=${DVM_PORT:-17000}
DIR=${DVM_DIR:-$CACHE/vm-$PORT}
BACKEND=${DVM_BACKEND:-$REPO/.build/release/paradice-backend}
SPECS=${DVM_SPECS:-$REPO/Specs}
log() { echo "run.sh: $*" >&2; }
die() { echo "run.sh: error: $*" >&2; exit 1; }

ROLE=${DVM_ROLE:-driver}
run_cmd="" poweroff=0 backend=1
while [ $# -gt 0 ]; do
  case "$1" in
    --run) [ $# -ge 2 ] || die "--run needs a command"; run_cmd=$2; poweroff=1; shift 2 ;;
    --poweroff) poweroff=1; shift ;;
    --no-backend) backend=0; shift ;;
    --role) [ $# -ge 2 ] || die "--role needs driver or guest"; ROLE=$2; shift 2 ;;
    -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) die "unknown argument $1 (see --help)" ;;
  esac
done

command -v qemu-system-x86_64 >/dev/null || die "qemu-system-x86_64 is missing: run testbed/drivervm/setup.sh"
KV=$(cat "$CACHE/kv" 2>/dev/null) || die "no kernel in $CACHE: run testbed/drivervm/setup.sh"
KERNEL=$CACHE/vmlinux-$KV
INITRD=$CACHE/initramfs.cpio
[ -f "$KERNEL" ] && [ -f "$INITRD" ] || die "$KERNEL or $INITRD is missing: run testbed/drivervm/setup.sh"

mkdir -p "$DIR"
DIR=$(cd "$DIR" && pwd)
# unix socket paths are limited to 108 bytes
[ ${#DIR} -le 90 ] || die "DVM_DIR path is too long for unix sockets: $DIR"
# QEMU locks its pid file, but check first so that a running VM's share is not clobbered below
if [ -f "$DIR/qemu.pid" ] && kill -0 "$(cat "$DIR/qemu.pid")" 2>/dev/null; then
  die "a VM is already running with state dir $DIR (pid $(cat "$DIR/qemu.pid")); run: DVM_DIR=$DIR $0 stop"
fi
rm -f "$DIR"/{qmp.sock,ctl.sock,serial.sock,ivshmem,qemu.pid,console.log}

# The share folder (guest /share) carries what the VM needs from the host besides /usr: a fresh copy of the
# backend and the specs on every boot, so the VM always runs what was just built.
SHARE=$DIR/share
rm -rf "$SHARE"; mkdir -p "$SHARE/bin"
case "$ROLE" in driver) ;; guest) backend=0 ;; *) die "unknown role $ROLE (driver or guest)" ;; esac
if [ "$ROLE" = guest ]; then
  # A guest VM runs the frontend side: the CLI, its daemon (C, glibc only) and the module for this kernel.
  # Without frontends to start (DVM_GUEST_DAEMONS empty) it boots with whatever of them there is.
  GUEST_BIN=${DVM_GUEST_BIN:-$REPO/.build/release}
  need=0; [ -n "${DVM_GUEST_DAEMONS:-}" ] && need=1
  for p in paradice paradice-guestd; do
    if [ ! -x "$GUEST_BIN/$p" ]; then
      [ $need = 0 ] || die "no $p in $GUEST_BIN: build it (swift build -c release --static-swift-stdlib --product $p) or set DVM_GUEST_BIN"
      continue
    fi
    if ldd "$GUEST_BIN/$p" 2>/dev/null | grep -q 'libswiftCore'; then
      die "$GUEST_BIN/$p links the Swift runtime dynamically; build it with --static-swift-stdlib"
    fi
    cp "$GUEST_BIN/$p" "$SHARE/bin/$p"
  done
  # the preload frontend, for `paradice run` in the guest VM, when it is built
  [ -e "$GUEST_BIN/libParadicePreload.so" ] && cp "$GUEST_BIN/libParadicePreload.so" "$SHARE/bin/"
  # One frontend, as /init and tests start it: paradice guest, which loads the module when /dev/paradice is
  # not there yet and runs the daemon in its place (its log on stderr, its pid the one started).
  cat > "$SHARE/bin/paradice-frontend" <<'SH'
#!/bin/sh
exec /share/bin/paradice guest --foreground --module /share/paradice.ko "$@"
SH
  chmod 755 "$SHARE/bin/paradice-frontend"
  rc=0; ko=$("$HERE/paradice-module.sh" "$KV") || rc=$?
  if [ $rc = 0 ]; then cp "$ko" "$SHARE/paradice.ko"
  elif [ $rc != 3 ] || [ $need = 1 ]; then die "no Paradice module for $KV (see above)"
  fi
  [ -z "${DVM_GUEST_DAEMONS:-}" ] || printf '%s\n' "$DVM_GUEST_DAEMONS" > "$SHARE/guest-daemons"
  printf '%s\n' "${DVM_GUEST_EXPECT:-}" > "$SHARE/guest-expect"
elif [ $backend = 1 ] && [ "$BACKEND" != none ]; then
  [ -x "$BACKEND" ] || die "no backend at $BACKEND: build it (cd $REPO && swift build -c release --static-swift-stdlib --product paradice-backend) or set DVM_BACKEND"
  # The guest sees the host's /usr but not the Swift toolchain (/opt/swift here), so the Swift runtime must be linked in.
  if ldd "$BACKEND" 2>/dev/null | grep -q 'libswiftCore'; then
    die "$BACKEND links the Swift runtime dynamically; build it with --static-swift-stdlib"
  fi
  [ -d "$SPECS" ] || die "no spec folder at $SPECS (DVM_SPECS)"
  cp "$BACKEND" "$SHARE/bin/paradice-backend"
  cp -r "$SPECS" "$SHARE/Specs"
  printf '%s\n' "${DVM_BACKEND_ARGS:-}" > "$SHARE/backend-extra-args"
  # Frontends for clients run in the driver VM itself (its backend over vsock), when they are built.
  GUEST_BIN=${DVM_GUEST_BIN:-$REPO/.build/release}
  for p in paradice libParadicePreload.so; do
    [ -e "$GUEST_BIN/$p" ] || continue
    if [ "$p" = paradice ] && ldd "$GUEST_BIN/$p" 2>/dev/null | grep -q 'libswiftCore'; then continue; fi
    cp "$GUEST_BIN/$p" "$SHARE/bin/$p"
  done
else
  backend=0
fi

append="console=ttyS0 loglevel=4 panic=-1 mitigations=off dvm.role=$ROLE"
[ $backend = 0 ] && append="$append dvm.backend=0"
if [ -n "$run_cmd" ]; then printf '%s\n' "$run_cmd" > "$SHARE/.dvm-run.sh"; append="$append dvm.run=1"; fi
[ $poweroff = 1 ] && append="$append dvm.poweroff=1"

# Serial console: on stdio, and always copied to console.log (dvmctl.py reads the markers from there).
# On a terminal, the QEMU monitor is multiplexed in (Ctrl-A c) and Ctrl-A x quits; Ctrl-C goes to the guest.
if [ -t 0 ]; then
  console=(-chardev "stdio,id=con,mux=on,signal=off,logfile=$DIR/console.log" -serial chardev:con -mon chardev=con)
else
  console=(-chardev "stdio,id=con,logfile=$DIR/console.log" -serial chardev:con)
fi

if [ "$ROLE" = driver ]; then
  devices=(
    -device virtio-gpu-pci                  # DRM card0 (virtio_gpu, KMS)
    -device virtio-keyboard-pci             # an evdev keyboard; keys can be injected over QMP (input-send-event)
    # user networking with no way out (restrict=on); only the backend port comes in, on the host's loopback
    -netdev "user,id=n0,restrict=on,hostfwd=tcp:127.0.0.1:$PORT-:7000${DVM_HOSTFWD_EXTRA:-}"
  )
else
  # No virtual devices. The frontends connect out to backends on the host's loopback (10.0.2.2 is the host
  # in QEMU user networking), which restrict=on would refuse; guest port 7000 is forwarded in all the same
  # (a backend run in the guest VM by hand), and $PORT names the VM.
  devices=(-netdev "user,id=n0,hostfwd=tcp:127.0.0.1:$PORT-:7000")
fi
qemu=(qemu-system-x86_64
  -accel tcg -m "${DVM_MEM:-1024}" -smp "${DVM_SMP:-1}"   # KVM cannot boot a normal kernel here; -smp 2 was slower
  -nodefaults -no-reboot -display none -vga none
  # PVH boot of the uncompressed vmlinux + an uncompressed initramfs: the fastest boot under TCG
  -kernel "$KERNEL" -initrd "$INITRD" -append "$append"
  "${console[@]}"
  "${devices[@]}" -device virtio-net-pci,netdev=n0,romfile=
  # host /usr (read-only) for host programs and the backend's C/C++ runtime; the per-VM share
  -virtfs local,path=/usr,mount_tag=hostusr,security_model=none,readonly=on,multidevs=remap
  -virtfs "local,path=$SHARE,mount_tag=share,security_model=none"
  # exec channel: guest /dev/virtio-ports/dvm.ctl <-> host ctl.sock
  -device virtio-serial-pci
  -chardev "socket,id=ctl,path=$DIR/ctl.sock,server=on,wait=off" -device virtserialport,chardev=ctl,name=dvm.ctl
  # frames over virtio-serial: guest /dev/virtio-ports/paradice <-> host serial.sock (a client connects)
  -chardev "socket,id=pd,path=$DIR/serial.sock,server=on,wait=off" -device virtserialport,chardev=pd,name=paradice
  # frames through shared-memory rings: the guest's ivshmem BAR 2 <-> host file $DIR/ivshmem (ivshmem:FILE)
  -object "memory-backend-file,id=pdshm,mem-path=$DIR/ivshmem,share=on,size=4M" -device ivshmem-plain,memdev=pdshm
  -qmp "unix:$DIR/qmp.sock,server=on,wait=off"
  -pidfile "$DIR/qemu.pid"
)
# shellcheck disable=SC2206
[ -n "${DVM_QEMU_EXTRA:-}" ] && qemu+=($DVM_QEMU_EXTRA)
lifetime=${DVM_LIFETIME:-0}
[ "$lifetime" != 0 ] && qemu=(timeout --foreground --kill-after=10 "$lifetime" "${qemu[@]}")

log "role $ROLE, kernel $KV, backend $([ $backend = 1 ] && echo "$BACKEND" || echo none), state $DIR"
log "backend endpoint will be tcp://127.0.0.1:$PORT once the console prints 'DVM ready'"
if [ -t 1 ]; then
  exec "${qemu[@]}"
fi
# Console not on a terminal (a script or dvmctl.py is reading it): report the boot markers on stderr too.
t0=$(date +%s.%N)
elapsed() { awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }'; }
"${qemu[@]}" &
qpid=$!
trap 'kill -TERM $qpid 2>/dev/null' TERM INT HUP
( tail -s 0.2 -n +1 -F "$DIR/console.log" 2>/dev/null | while IFS= read -r line; do
    case "$line" in
      "DVM "*) printf 'run.sh: +%ss %s\n' "$(elapsed)" "${line%$'\r'}" >&2 ;;
    esac
  done ) &
watcher=$!
rc=0; wait $qpid || rc=$?
# a signal may interrupt the first wait; make sure QEMU is gone before we return
while kill -0 $qpid 2>/dev/null; do wait $qpid || rc=$?; done
sleep 0.3                                          # let the watcher print the last markers
# SIGKILL: a caller that blocks signals (a test runner) passes its mask on, and tail would outlive us.
pkill -KILL -P $watcher 2>/dev/null; kill -KILL $watcher 2>/dev/null; wait $watcher 2>/dev/null || true
log "QEMU exited (rc=$rc) after $(elapsed) s"
exit $rc

#!/bin/sh
# /init of the Paradice driver VM (busybox; PID 1). Progress goes to the serial console as marker lines
#   DVM <event> t=<guest uptime> [details]
# that the host side (run.sh, dvmctl.py) waits for. Events, in order: init, modules, devices, exec-server,
# backend (or backend-failed), ready, then run-begin/run-end rc=N if a command was given, and poweroff.
#
# Kernel command line options (set by run.sh):
#   dvm.role=guest  a guest VM: load only what any VM needs (network, exec channel, 9p), no virtual device
#                   driver and no backend; start the Paradice frontends listed in /share/guest-daemons
#   dvm.backend=0   do not start paradice-backend
#   dvm.run=1       after "ready", run /share/.dvm-run.sh in the host userland and print its output
#   dvm.poweroff=1  power off after that instead of opening a shell on the console
export PATH=/bin:/sbin
mark() { read -r up _ < /proc/uptime; echo "DVM $1 t=$up${2:+ $2}"; }

mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
mkdir -p /dev/pts /dev/shm
mount -t devpts devpts /dev/pts
mount -t tmpfs tmpfs /dev/shm
mount -t tmpfs tmpfs /tmp
mount -t tmpfs tmpfs /run

CMDLINE=$(cat /proc/cmdline)
opt() { for w in $CMDLINE; do case "$w" in "$1="*) echo "${w#*=}"; return;; esac; done; }
ROLE=$(opt dvm.role); ROLE=${ROLE:-driver}
mark init "role=$ROLE"
MODULES=/etc/dvm-modules EXPECT=/etc/dvm-expect
[ "$ROLE" = guest ] && MODULES=/etc/dvm-modules-guest EXPECT=/dev/null

# --- drivers ---------------------------------------------------------------------------------------------
for m in $(cat $MODULES); do
  case "$m" in
    vivid) modprobe vivid n_devs=1 ;;          # one vivid instance, every node kind: video0..3, vbi0..1, radio0..1, swradio0, v4l-touch0, media0
    *) modprobe "$m" ;;
  esac || echo "DVM modprobe-failed $m"
done
mark modules

# --- network: QEMU user networking; the host reaches us through hostfwd on 10.0.2.15 ------------------------
ip link set lo up
if [ -e /sys/class/net/eth0 ]; then ip addr add 10.0.2.15/24 dev eth0; ip link set eth0 up; fi

# --- 9p shares: host /usr (read-only) and the per-VM share folder --------------------------------------------
for t in $(cat /sys/bus/virtio/drivers/9pnet_virtio/virtio*/mount_tag 2>/dev/null | tr '\0' ' '); do
  case "$t" in
    hostusr) mkdir -p /host/usr
             mount -t 9p -o trans=virtio,version=9p2000.L,msize=262144,cache=loose,ro hostusr /host/usr ;;
    share)   mount -t 9p -o trans=virtio,version=9p2000.L,msize=262144 share /share ;;
  esac
done
if [ -d /host/usr/bin ]; then
  # Make /host a root that host programs can be chrooted into (see /bin/hostrun): the host is usr-merged,
  # so /bin, /lib, ... are links into the shared /usr; /dev, /proc, /sys and /share are the VM's own.
  for d in bin sbin lib lib64; do ln -s usr/$d /host/$d; done
  mkdir -p /host/dev /host/proc /host/sys /host/tmp /host/run /host/etc /host/root /host/share
  mount -o bind /dev /host/dev
  # ptys for host programs (a bind of /dev leaves devpts out); not in a guest VM, whose forwarded /dev/pts/N
  # nodes the module makes in devtmpfs, which devpts there would hide
  [ "$ROLE" = guest ] || mount -o bind /dev/pts /host/dev/pts
  mount -o bind /proc /host/proc
  mount -o bind /sys /host/sys
  mount -o bind /share /host/share
  mount -t tmpfs tmpfs /host/tmp
  mount -t tmpfs tmpfs /host/run
  cp /etc/passwd /etc/group /host/etc/
else
  echo "DVM warning: host /usr is not shared; hostrun and the backend will not work"
fi

# --- wait (at most 30 s) for the device nodes ------------------------------------------------------------------
i=0
while [ $i -lt 300 ]; do
  missing=""
  for n in $(cat $EXPECT); do [ -e "$n" ] || missing="$missing $n"; done
  [ -z "$missing" ] && break
  i=$((i + 1)); usleep 100000
done
[ -n "$missing" ] && echo "DVM missing-devices$missing"
# There is no udev: give virtio-serial ports their udev names. The vportNp1 number depends on the device set.
for p in /sys/class/virtio-ports/vport*; do
  [ -e "$p/name" ] || continue
  mkdir -p /dev/virtio-ports
  ln -sf "../${p##*/}" "/dev/virtio-ports/$(cat "$p/name")"
done
mark devices "$(cd /dev && ls -d video* vbi* radio* swradio* v4l-touch* media* dri/* snd/* input/event* uinput cuse 2>/dev/null | tr '\n' ' ')"

# --- exec server on the virtio-serial port "dvm.ctl" (the host end is run.sh's ctl.sock) ----------------------
# Request, one line:  EXEC <id> <host|init> <timeout s, 0 = none> <base64 of a shell command>
#                     POWEROFF <id>
# Reply:  "DVM-EXEC <id> rc=<rc> out=<bytes> err=<bytes>\n", then the stdout bytes, then the stderr bytes.
#         "DVM-BYE <id>\n" before powering off.
# "host" runs the command with the host's /bin/sh in the /host chroot (host programs: v4l2-ctl, evtest, ...);
# "init" runs it with busybox sh in the initramfs.
exec_server() {
  port=/dev/virtio-ports/dvm.ctl
  # Open the port once and keep it: while no host client is connected a read returns EOF at once, so poll
  # slowly. (A port can be open only once at a time, and commands must not inherit it: they run with 3<&-.)
  until exec 3<>"$port"; do sleep 1; done
  while :; do
    while read -r verb id mode tmo b64 <&3; do
      case "$verb" in
        EXEC)
          echo "$b64" | base64 -d > /tmp/exec.cmd 2>/dev/null
          if [ "$mode" = host ]; then
            cp /tmp/exec.cmd /host/tmp/exec.cmd
            set -- hostrun /bin/sh /tmp/exec.cmd
          else
            set -- sh -c 'cd / && exec sh /tmp/exec.cmd'
          fi
          # its own session, so that a timeout kills the command with everything it started
          setsid "$@" > /tmp/exec.out 2> /tmp/exec.err < /dev/null 3<&- &
          cpid=$!
          wpid=""
          rm -f /tmp/exec.killed
          if [ "$tmo" -gt 0 ] 2>/dev/null; then
            ( sleep "$tmo"; touch /tmp/exec.killed; kill -KILL -"$cpid" 2>/dev/null ) 3<&- &
            wpid=$!
          fi
          wait "$cpid"; rc=$?
          [ -n "$wpid" ] && kill "$wpid" 2>/dev/null
          [ -e /tmp/exec.killed ] && echo "dvm: killed after $tmo s (timeout)" >> /tmp/exec.err
          { echo "DVM-EXEC $id rc=$rc out=$(wc -c < /tmp/exec.out) err=$(wc -c < /tmp/exec.err)"
            cat /tmp/exec.out /tmp/exec.err; } >&3 ;;
        POWEROFF)
          echo "DVM-BYE $id" >&3
          mark poweroff; sync; poweroff -f ;;
      esac
    done
    usleep 200000
  done
}
if [ -e /dev/virtio-ports/dvm.ctl ]; then
  exec_server < /dev/null > /dev/null 2>&1 &
  mark exec-server
fi

# --- paradice-backend ----------------------------------------------------------------------------------------
# run.sh puts the host-built backend (a --static-swift-stdlib build: it needs only glibc, libstdc++ and
# libgcc_s, which the host /usr provides) and the repo's Specs/ into the share. Its log is /share/backend.log,
# i.e. a file in the VM's share folder on the host. Every plug-in of the project is on, and sysfs is
# readable (what libdrm and v4l-utils read to identify a device): without a class's plug-in its calls
# that need one are refused, which no client in the VM should meet by default.
started=0
if [ "$ROLE" != guest ] && [ "$(opt dvm.backend)" != 0 ] && [ -x /share/bin/paradice-backend ]; then
  set -f                                             # the device globs are for the backend, not this shell
  # also on vsock (CID 1 is the VM itself, through vsock_loopback) and on the virtio-serial port "paradice"
  # (run.sh's serial.sock on the host), one session at a time
  more=""
  [ -d /sys/module/vsock_loopback ] && more="--listen vsock://any:7000"
  [ -e /dev/virtio-ports/paradice ] && more="$more --listen serial:/dev/virtio-ports/paradice"
  # and on the ivshmem region (run.sh's $DIR/ivshmem on the host); its BAR is enabled first, no driver binds it
  set +f
  for d in /sys/bus/pci/devices/*; do
    if [ "$(cat $d/vendor)" = 0x1af4 ] && [ "$(cat $d/device)" = 0x1110 ]; then
      echo 1 > $d/enable 2>/dev/null
      more="$more --listen ivshmem:$d/resource2"
      break
    fi
  done
  set -f
  hostrun /share/bin/paradice-backend --listen tcp://0.0.0.0:7000 --plain-tcp $more --specs /share/Specs \
    --device /dev/video0 --device '/dev/video*' --device '/dev/vbi*' --device '/dev/radio*' --device '/dev/swradio*' \
    --device '/dev/v4l-touch*' --device '/dev/v4l-subdev*' --device '/dev/media*' \
    --device '/dev/dri/*' --device '/dev/snd/*' --device '/dev/input/event*' --device /dev/uinput \
    --plugins v4l2,evdev,alsa,drm,kvm --tree /sys \
    $(cat /share/backend-extra-args 2>/dev/null) > /share/backend.log 2>&1 < /dev/null &
  bpid=$!
  set +f
  # listening when /proc/net/tcp{,6} has 0.0.0.0:7000 (0x1B58) in state LISTEN (0A)
  i=0
  while [ $i -lt 600 ]; do
    grep -q ':1B58 0\{8,32\}:0000 0A' /proc/net/tcp /proc/net/tcp6 2>/dev/null && { started=1; break; }
    kill -0 $bpid 2>/dev/null || break
    i=$((i + 1)); usleep 100000
  done
  if [ $started = 1 ]; then
    mark backend "tcp://0.0.0.0:7000 $more pid=$bpid"
  else
    mark backend-failed "see backend.log in the share folder"
    tail -n 20 /share/backend.log
  fi
fi
# --- guest role: Paradice frontends -------------------------------------------------------------------------
# run.sh puts paradice (a --static-swift-stdlib build) and its daemon into /share/bin, the module built for
# this kernel into /share/paradice.ko (paradice guest loads it), and one line of `paradice guest` arguments
# per backend into /share/guest-daemons. Each frontend's log is /share/guest-N.log. Its backend may still be
# booting (a driver VM started alongside): until the nodes of /share/guest-expect are there, a frontend that
# gave up is started again. "guest=ok" in the ready marker: all of them are.
guest=none
if [ "$ROLE" = guest ] && [ -s /share/guest-daemons ]; then
  set -f
  n=0
  while IFS= read -r args; do
    [ -n "$args" ] || continue
    n=$((n + 1))
    ( tries=0
      until hostrun /share/bin/paradice-frontend $args >> /share/guest-$n.log 2>&1 < /dev/null; do
        tries=$((tries + 1))
        [ -e /tmp/guest-up ] || [ $tries -ge 60 ] && break
        echo "init: paradice guest exited; again in 2 s" >> /share/guest-$n.log; sleep 2
      done ) < /dev/null > /dev/null 2>&1 &
  done < /share/guest-daemons
  set +f
  guest=ok i=0
  while [ $i -lt 1200 ]; do
    missing=""
    for node in $(cat /share/guest-expect 2>/dev/null); do [ -e "$node" ] || missing="$missing $node"; done
    [ -z "$missing" ] && break
    i=$((i + 1)); usleep 100000
  done
  if [ -n "$missing" ]; then guest=missing; mark guest-missing "$missing"; else touch /tmp/guest-up; fi
  mark guest "frontends=$n $(cd /dev && ls -d video* dri/* snd/* input/event* uinput 2>/dev/null | tr '\n' ' ')"
fi
mark ready "backend=$started guest=$guest"

if [ "$(opt dvm.run)" = 1 ] && [ -f /share/.dvm-run.sh ]; then
  mark run-begin
  hostrun /bin/sh /share/.dvm-run.sh < /dev/null 2>&1
  mark run-end "rc=$?"
fi
if [ "$(opt dvm.poweroff)" = 1 ]; then
  mark poweroff; sync; poweroff -f
fi
# Interactive use: a shell on the serial console. Leaving it powers the VM off.
echo "DVM console shell: 'hostrun CMD' runs host programs (v4l2-ctl, evtest, aplay, modetest); exit powers off"
setsid cttyhack sh -l
mark poweroff; sync; poweroff -f

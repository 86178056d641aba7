#!/bin/sh
# /bin/hostrun in the driver VM: run a program of the host's userland (host /usr, shared read-only over 9p and
# set up as a chroot at /host by /init) against the VM's devices.   Example: hostrun v4l2-ctl -d /dev/video0 --info
# The environment is reset so that nothing from the initramfs (busybox PATH etc.) leaks into host programs.
exec chroot /host /usr/bin/env -i PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin HOME=/root TERM=dumb \
  ${DVM_ENV:-} "$@"

"""VIDIOC_QUERYCAP on DEVICE (argv[1]) with its argument pointer at an address of paradice-guestd's own
view of a module area (where the daemon keeps a mirror; the daemon's /proc maps show it as /dev/paradice),
which this process has not mapped. Prints the errno name (EFAULT, as a local driver gives), or that the
call wrote there. Run by testbed/guestd-smoke.sh in the driver VM, on a forwarded node and a native one."""
import ctypes
import errno
import glob
import os
import sys

VIDIOC_QUERYCAP = 0x80685600

status = glob.glob("/run/paradice/guest-*.status")[0]
pid = [line.split()[1] for line in open(status) if line.startswith("pid ")][0]
views = [line.split()[0].split("-")[0] for line in open("/proc/%s/maps" % pid) if line.rstrip().endswith("/dev/paradice")]
if not views:
    print("no view of a module area in the daemon")
    sys.exit(1)
fd = os.open(sys.argv[1], os.O_RDWR)
libc = ctypes.CDLL(None, use_errno=True)   # fcntl.ioctl takes a C int: an address needs the C call
libc.ioctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_void_p]
if libc.ioctl(fd, VIDIOC_QUERYCAP, int(views[0], 16)) == 0:
    print("QUERYCAP wrote at the address")
else:
    print(errno.errorcode[ctypes.get_errno()])

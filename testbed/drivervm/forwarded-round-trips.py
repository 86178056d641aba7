#!/usr/bin/env python3
"""Forwarded round trips as a program in the guest VM sees them: COUNT ioctls on a forwarded node (a DRM
node: DRM_IOCTL_GET_CAP, one region, one round trip to the backend once its plan is known), each timed.

  forwarded-round-trips.py NODE COUNT    prints "round_trip_us" and the COUNT times in microseconds, in order
"""
import fcntl, os, struct, sys, time

DRM_IOCTL_GET_CAP = 0xC010640C   # _IOWR('d', 0x0c, struct drm_get_cap)
DRM_CAP_DUMB_BUFFER = 0x1

def main():
    node, count = sys.argv[1], int(sys.argv[2])
    fd = os.open(node, os.O_RDWR | os.O_CLOEXEC)
    cap = bytearray(struct.pack("<QQ", DRM_CAP_DUMB_BUFFER, 0))
    for _ in range(3):   # the first asks for its region (PD_NEED); the frontend sends it ahead afterwards
        fcntl.ioctl(fd, DRM_IOCTL_GET_CAP, cap)
    times = []
    for _ in range(count):
        start = time.perf_counter_ns()
        fcntl.ioctl(fd, DRM_IOCTL_GET_CAP, cap)
        times.append((time.perf_counter_ns() - start) / 1000)
    os.close(fd)
    print("round_trip_us " + " ".join(f"{t:.1f}" for t in times))

if __name__ == "__main__":
    main()

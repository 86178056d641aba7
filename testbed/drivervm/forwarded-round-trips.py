#!/usr/bin/env python3
"""Forwarded round trips as a program sees them: ioctls on a forwarded node (a DRM node:
DRM_IOCTL_GET_CAP, one region, one round trip to the backend once its plan is known), each timed.

  forwarded-round-trips.py NODE COUNT                 COUNT ioctls back to back
  forwarded-round-trips.py NODE --for S --every MS    one ioctl every MS milliseconds for S seconds, to
                                                      sample what a round trip costs while another client runs

Prints "round_trip_us" and the times in microseconds, in order.
"""
import fcntl, os, struct, sys, time

DRM_IOCTL_GET_CAP = 0xC010640C   # _IOWR('d', 0x0c, struct drm_get_cap)
DRM_CAP_DUMB_BUFFER = 0x1

def main():
    node = sys.argv[1]
    count, seconds, every = None, None, 0.0
    if sys.argv[2] == "--for":
        seconds, every = float(sys.argv[3]), float(sys.argv[5]) / 1000
    else:
        count = int(sys.argv[2])
    fd = os.open(node, os.O_RDWR | os.O_CLOEXEC)
    cap = bytearray(struct.pack("<QQ", DRM_CAP_DUMB_BUFFER, 0))
    for _ in range(3):   # the first asks for its region (PD_NEED); the frontend sends it ahead afterwards
        fcntl.ioctl(fd, DRM_IOCTL_GET_CAP, cap)
    times = []
    end = time.monotonic() + seconds if seconds is not None else None
    while (len(times) < count) if count is not None else (time.monotonic() < end):
        start = time.perf_counter_ns()
        fcntl.ioctl(fd, DRM_IOCTL_GET_CAP, cap)
        times.append((time.perf_counter_ns() - start) / 1000)
        if every:
            time.sleep(every)
    os.close(fd)
    print("round_trip_us " + " ".join(f"{t:.1f}" for t in times))

if __name__ == "__main__":
    main()

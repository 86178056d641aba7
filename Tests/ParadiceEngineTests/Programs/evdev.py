#!/usr/bin/python3
"""Evdev clients for DriverVMEvdevTests, the same file natively in the driver VM and through `paradice run`.

  evdev.py keyboard DIR LIFETIME   (in the VM) create a uinput keyboard, write its node to DIR/node, then run
                                   the commands the host drops in DIR/cmd.N (emit … | quit), acking each in
                                   DIR/ack.N; the device goes away at quit or after LIFETIME seconds
  evdev.py reads NODE DIR NAME     read sizes, EAGAIN, select/poll/epoll and blocking-read wake-ups, unplug;
                                   before each wait it creates DIR/NAME.K so that the host emits event K
  evdev.py grab NODE               EVIOCGRAB on one open file: grab, grab again, release, release again
  evdev.py grab-two NODE           EVIOCGRAB on two open files: grab on the first, then on the second, release
                                   on the second, then on the first
  evdev.py fork-open NODE          open, fork, and open again in the child: each open's result
  evdev.py mask NODE               EVIOCGMASK and EVIOCSMASK of the event types: the mask of a new file, a set of
                                   4 bytes (not whole longs), a set of EV_SYN and EV_MSC, the mask after
  evdev.py hold NODE DIR NAME      grab and keep the grab: DIR/NAME.grabbed, then the events it alone gets,
                                   then DIR/NAME.read; it exits when DIR/NAME.exit appears
  evdev.py wait-grab NODE DIR NAME open before the events, try a grab (EBUSY while another holds it), create
                                   DIR/NAME.ready, at DIR/NAME.check read what came (nothing, under another's grab),
                                   create DIR/NAME.checked, at DIR/NAME.regrab retry the grab for 20 s

Standard library only: the driver VM runs the host's /usr/bin/python3.
"""
import ctypes
import errno
import fcntl
import os
import select
import struct
import sys
import time

EVENT = struct.Struct("qqHHi")          # struct input_event on LP64: timeval, type, code, value
EVIOCGRAB = 0x40044590
EVIOCGMASK, EVIOCSMASK = 0x80104592, 0x40104593   # struct input_mask { u32 type, codes_size; u64 codes_ptr }
UI_SET_EVBIT, UI_SET_KEYBIT, UI_SET_MSCBIT, UI_SET_LEDBIT = 0x40045564, 0x40045565, 0x40045568, 0x40045569
UI_SET_PHYS, UI_DEV_SETUP, UI_DEV_CREATE, UI_DEV_DESTROY = 0x4008556C, 0x405C5503, 0x5501, 0x5502
UI_GET_SYSNAME_64 = 0x8040552C
EV_SYN, EV_KEY, EV_MSC, EV_LED = 0, 1, 4, 0x11


def out(*words):
    print(*words, flush=True)


def touch(path):
    with open(path + ".tmp", "w") as f:
        f.write("\n")
    os.rename(path + ".tmp", path)


def wait_for(path, seconds=60):
    deadline = time.monotonic() + seconds
    while not os.path.exists(path):
        if time.monotonic() > deadline:
            out("no", os.path.basename(path), "after", seconds, "s")
            sys.exit(3)
        time.sleep(0.02)


def attempt(call):
    """A call's result, or the errno name it failed with."""
    try:
        return call()
    except OSError as e:
        return errno.errorcode.get(e.errno, str(e.errno))


def events(data):
    if not isinstance(data, bytes):
        return data
    return " ".join("%d:%d:%d" % EVENT.unpack_from(data, i)[2:] for i in range(0, len(data) - len(data) % EVENT.size, EVENT.size))


def masks(ready):
    """poll's or epoll's answer for the one descriptor, without its number (which differs by place)."""
    return " ".join("0x%x" % mask for _, mask in ready) or "timeout"


def read(fd, count):
    data = attempt(lambda: os.read(fd, count))
    out("read %d bytes:" % count, ("%d bytes %s" % (len(data), events(data))) if isinstance(data, bytes) else data)


# --- the device, natively in the VM ---------------------------------------------------------------------------

def keyboard(folder, lifetime):
    fd = os.open("/dev/uinput", os.O_WRONLY | os.O_NONBLOCK)
    for ev in (EV_KEY, EV_MSC, EV_LED):
        fcntl.ioctl(fd, UI_SET_EVBIT, ev)
    for key in range(1, 89):                   # KEY_ESC .. KEY_F12: a keyboard's main block
        fcntl.ioctl(fd, UI_SET_KEYBIT, key)
    fcntl.ioctl(fd, UI_SET_MSCBIT, 4)          # MSC_SCAN
    for led in (0, 1, 2):                      # NUML, CAPSL, SCROLLL
        fcntl.ioctl(fd, UI_SET_LEDBIT, led)
    fcntl.ioctl(fd, UI_SET_PHYS, b"paradice/uinput0\0")
    fcntl.ioctl(fd, UI_DEV_SETUP, struct.pack("HHHH80sI", 0x03, 0x1209, 0x5044, 0x0101, b"Paradice test keyboard", 0))
    fcntl.ioctl(fd, UI_DEV_CREATE)
    name = fcntl.ioctl(fd, UI_GET_SYSNAME_64, bytes(64)).split(b"\0")[0].decode()
    node = None
    deadline = time.monotonic() + 10
    while node is None or not os.path.exists(node):
        entries = [e for e in os.listdir("/sys/class/input/" + name) if e.startswith("event")]
        node = "/dev/input/" + entries[0] if entries else None
        if time.monotonic() > deadline:
            sys.exit("no event node for " + name)
        time.sleep(0.02)
    # The console's keyboard handler sets every keyboard's LEDs to the console's own the first time any
    # keyboard reports after boot (and on each grab's release): have the first time happen now, so that a
    # LED event emitted later stays as emitted.
    os.write(fd, EVENT.pack(0, 0, EV_MSC, 4, 0) + EVENT.pack(0, 0, EV_SYN, 0, 0))
    time.sleep(0.3)
    with open(folder + "/node.tmp", "w") as f:
        f.write(node + "\n")
    os.rename(folder + "/node.tmp", folder + "/node")
    out("device", name, node)
    n, end = 1, time.monotonic() + lifetime
    while time.monotonic() < end:
        path = "%s/cmd.%d" % (folder, n)
        if not os.path.exists(path):
            time.sleep(0.02)
            continue
        lines = open(path).read().split("\n")
        if lines[0] == "quit":
            break
        for line in lines[1:]:
            words = line.split()
            if len(words) == 2 and words[0] == "sleep":
                time.sleep(float(words[1]))
            elif len(words) == 3:
                os.write(fd, EVENT.pack(0, 0, *map(int, words)))
        touch("%s/ack.%d" % (folder, n))
        n += 1
    fcntl.ioctl(fd, UI_DEV_DESTROY)
    touch("%s/ack.%d" % (folder, n))
    out("destroyed")


# --- clients, natively or through Paradice ---------------------------------------------------------------------

def reads(node, folder, name):
    fd = os.open(node, os.O_RDONLY | os.O_NONBLOCK)
    read(fd, 23)                 # less than one event
    read(fd, 0)                  # nothing queued
    read(fd, 24)

    def waited(how, wait):
        ready = select.select([fd], [], [], 0)[0]
        out(how, "before the event:", "ready" if ready else "not ready")
        touch("%s/%s.%s" % (folder, name, how))
        start = time.monotonic()
        result = wait()
        out(how, "woke:", result)
        out("elapsed", how, "%.2f" % (time.monotonic() - start))

    waited("select", lambda: "readable" if select.select([fd], [], [], 30)[0] == [fd] else "timeout")
    read(fd, 0)
    read(fd, 60)                 # two and a half events: two
    read(fd, 60)
    read(fd, 24)

    p = select.poll()
    p.register(fd, select.POLLIN)
    waited("poll", lambda: masks(p.poll(30000)))
    read(fd, 24 * 64)

    e = select.epoll()
    e.register(fd, select.EPOLLIN)
    waited("epoll", lambda: masks(e.poll(30)))
    read(fd, 24 * 64)

    fcntl.fcntl(fd, fcntl.F_SETFL, fcntl.fcntl(fd, fcntl.F_GETFL) & ~os.O_NONBLOCK)
    waited("read", lambda: events(attempt(lambda: os.read(fd, 60))))
    read(fd, 60)
    out("done")

    # The device goes away: the reader is told so.
    out("unplug poll:", masks(p.poll(30000)))
    read(fd, 24)


def grab(node):
    fd = os.open(node, os.O_RDONLY)
    for value in (1, 1, 0, 0):
        out("EVIOCGRAB %d:" % value, attempt(lambda: fcntl.ioctl(fd, EVIOCGRAB, value)))


def grab_two(node):
    first, second = os.open(node, os.O_RDONLY), os.open(node, os.O_RDONLY)
    for name, fd, value in (("first", first, 1), ("second", second, 1), ("second", second, 0), ("first", first, 0)):
        out("EVIOCGRAB %d on the %s file:" % (value, name), attempt(lambda: fcntl.ioctl(fd, EVIOCGRAB, value)))


def mask(node):
    fd = os.open(node, os.O_RDONLY)
    codes = ctypes.create_string_buffer(8)

    def call(number, size):
        r = attempt(lambda: fcntl.ioctl(fd, number, struct.pack("IIQ", 0, size, ctypes.addressof(codes))))
        return 0 if isinstance(r, bytes) else r

    def get():
        struct.pack_into("Q", codes, 0, 0)
        r = call(EVIOCGMASK, 8)
        return "0x%x" % struct.unpack_from("Q", codes)[0] if r == 0 else r

    def set_mask(size, bits):
        struct.pack_into("Q", codes, 0, bits)
        return call(EVIOCSMASK, size)

    out("EVIOCGMASK of the types:", get())
    out("EVIOCSMASK of the types, 4 bytes:", set_mask(4, 0xffffffff))
    out("EVIOCSMASK of the types, EV_SYN and EV_MSC:", set_mask(8, (1 << EV_SYN) | (1 << EV_MSC)))
    out("EVIOCGMASK of the types:", get())


def fork_open(node):
    fd = attempt(lambda: os.open(node, os.O_RDONLY))
    out("parent open:", "ok" if isinstance(fd, int) else fd)
    child = os.fork()
    if child == 0:
        again = attempt(lambda: os.open(node, os.O_RDONLY))
        out("child open:", "ok" if isinstance(again, int) else again)
        os._exit(0)
    os.waitpid(child, 0)


def hold(node, folder, name):
    fd = os.open(node, os.O_RDONLY)
    out("grab:", attempt(lambda: fcntl.ioctl(fd, EVIOCGRAB, 1)))
    touch("%s/%s.grabbed" % (folder, name))
    p = select.poll()
    p.register(fd, select.POLLIN)
    out("poll:", masks(p.poll(30000)))
    # The keyboard writes its events one by one: the poll wakes at the first packet's SYN_REPORT, so the
    # read waits for the packets of the same command to be there, however fast the wake-up was.
    time.sleep(0.5)
    read(fd, 24 * 64)
    touch("%s/%s.read" % (folder, name))
    wait_for("%s/%s.exit" % (folder, name))


def wait_grab(node, folder, name):
    fd = os.open(node, os.O_RDONLY | os.O_NONBLOCK)
    out("grab:", attempt(lambda: fcntl.ioctl(fd, EVIOCGRAB, 1)))
    touch("%s/%s.ready" % (folder, name))
    wait_for("%s/%s.check" % (folder, name))
    read(fd, 24 * 64)
    touch("%s/%s.checked" % (folder, name))
    wait_for("%s/%s.regrab" % (folder, name))
    deadline = time.monotonic() + 20
    while True:
        result = attempt(lambda: fcntl.ioctl(fd, EVIOCGRAB, 1))
        if result == 0 or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    out("grab once the holder is gone:", result)


if __name__ == "__main__":
    command, args = sys.argv[1], sys.argv[2:]
    if command == "keyboard":
        keyboard(args[0], float(args[1]))
    elif command == "reads":
        reads(*args)
    elif command == "grab":
        grab(*args)
    elif command == "grab-two":
        grab_two(*args)
    elif command == "mask":
        mask(*args)
    elif command == "fork-open":
        fork_open(*args)
    elif command == "hold":
        hold(*args)
    elif command == "wait-grab":
        wait_grab(*args)
    else:
        sys.exit("unknown command " + command)

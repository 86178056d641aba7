# A guest for recording seeds (Tests/Fuzz/seeds.py): pty calls through a forwarded /dev/ptmx, then reads of
# an exported tree (argument 1). Run as: paradice run --backend unix:PROXY -- python3 seed-guest.py TREE
import os, fcntl, termios, struct, select, sys, array
m = os.open("/dev/ptmx", os.O_RDWR | os.O_NOCTTY)
buf = array.array('i', [0]); fcntl.ioctl(m, 0x80045430, buf); print("ptn", buf[0])     # TIOCGPTN
fcntl.ioctl(m, 0x40045431, struct.pack('i', 0))                                          # TIOCSPTLCK
s = fcntl.ioctl(m, 0x5441, os.O_RDWR | os.O_NOCTTY)                                      # TIOCGPTPEER
attrs = termios.tcgetattr(s); attrs[3] &= ~termios.ECHO; termios.tcsetattr(s, termios.TCSANOW, attrs)
fcntl.ioctl(m, termios.TIOCSWINSZ, struct.pack('HHHH', 40, 100, 0, 0))
print("winsz", struct.unpack('HHHH', fcntl.ioctl(s, termios.TIOCGWINSZ, b'\0' * 8)))
os.write(m, b"hello\n")
r, _, _ = select.select([s], [], [], 2); print("select", len(r))
print("read", os.read(s, 64))
os.write(s, b"back\n")
p = select.poll(); p.register(m, select.POLLIN); print("poll", p.poll(2000))
print("read", os.read(m, 64))
print("fionread", struct.unpack('i', fcntl.ioctl(m, termios.FIONREAD, b'\0' * 4)))
fl = fcntl.fcntl(m, fcntl.F_GETFL); fcntl.fcntl(m, fcntl.F_SETFL, fl | os.O_NONBLOCK)
try: os.read(m, 64)
except BlockingIOError: print("eagain")
fcntl.ioctl(m, termios.TCFLSH, termios.TCIOFLUSH)
fcntl.ioctl(s, termios.TCSBRK, 1)
print("pgrp?", end=" ")
try: fcntl.ioctl(s, termios.TIOCGPGRP, b'\0' * 4)
except OSError as e: print(e.errno)
print(os.fstat(m).st_mode, os.lseek(m, 0, os.SEEK_CUR) if False else "")
print(open(sys.argv[1] + "/class/name").read().strip(), os.readlink(sys.argv[1] + "/link"), sorted(os.listdir(sys.argv[1])))
d = os.dup(s); os.close(d)
os.close(s); os.close(m)

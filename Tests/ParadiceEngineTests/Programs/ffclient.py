#!/usr/bin/env python3
"""A force-feedback client on an evdev node, standard library only: ffclient.py NODE

Uploads a rumble and a sine effect (EVIOCSFF: the kernel asks the device's driver, here a uinput
program, and writes the new id back), updates the rumble, plays and stops the sine (write() of EV_FF
events), erases the rumble (EVIOCRMFF) and closes the node, which erases the sine. Prints each step."""
import fcntl
import os
import struct
import sys

EVIOCSFF, EVIOCRMFF = 0x40304580, 0x40044581
EV_FF, FF_RUMBLE, FF_PERIODIC, FF_SINE = 0x15, 0x50, 0x51, 0x5A


def effect(kind, effect_id, union, length):
    # struct ff_effect: type, id, direction, trigger {button, interval}, replay {length, delay}, the union at 16
    head = struct.pack("=HhHHHHH", kind, effect_id, 0, 0, 0, length, 0)
    return bytearray(head + b"\0\0" + union.ljust(32, b"\0"))


def upload(fd, buffer):
    fcntl.ioctl(fd, EVIOCSFF, buffer, True)
    return struct.unpack_from("=h", buffer, 2)[0]


def play(fd, effect_id, value):
    os.write(fd, struct.pack("=qqHHi", 0, 0, EV_FF, effect_id, value))


fd = os.open(sys.argv[1], os.O_RDWR)
rumble = upload(fd, effect(FF_RUMBLE, -1, struct.pack("=HH", 0x8000, 0x4000), 500))
print("rumble uploaded as", rumble)
# periodic: waveform, period, magnitude, offset, phase, envelope (4), custom_len at 20, custom_data at 24
sine = upload(fd, effect(FF_PERIODIC, -1, struct.pack("=HHhhHHHHHxxIxxxxQ", FF_SINE, 100, 0x4000, 0, 0, 0, 0, 0, 0, 0, 0), 1000))
print("sine uploaded as", sine)
print("rumble updated as", upload(fd, effect(FF_RUMBLE, rumble, struct.pack("=HH", 0x1000, 0x2000), 250)))
play(fd, sine, 1)
play(fd, sine, 0)
fcntl.ioctl(fd, EVIOCRMFF, rumble)
print("rumble erased")
os.close(fd)
print("closed")

#!/usr/bin/env python3
"""Seeds from real traffic for the fuzz harnesses.

  seeds.py record LISTEN BACKEND FOLDER   a unix-socket proxy in front of a backend: every guest
                                          connection's bytes (guest → backend) go to FOLDER/conn-N.bin
  seeds.py convert FOLDER CLASS_INDEX     each recording as frames seeds (Tests/Fuzz/corpus/frames: byte 0 =
                                          1, its own handshake; and 0, the harness's handshake), and each
                                          PD_IOCTL in it as a planner seed (Tests/Fuzz/corpus/planner) of the
                                          class at CLASS_INDEX in `paradice spec list` (raw command, regions,
                                          raw argument)

Then keep what adds coverage: fuzz-NAME -merge=1 Tests/Fuzz/corpus/NAME NEW_SEEDS.
"""
import hashlib, os, socket, struct, sys, threading

here = os.path.dirname(os.path.abspath(__file__))

def record(listen, backend, folder):
    os.makedirs(folder, exist_ok=True)
    if os.path.exists(listen):
        os.unlink(listen)
    server = socket.socket(socket.AF_UNIX)
    server.bind(listen)
    server.listen(16)

    def pump(src, dst, log):
        try:
            while data := src.recv(65536):
                if log:
                    log.write(data)
                    log.flush()
                dst.sendall(data)
        except OSError:
            pass
        try:
            dst.shutdown(socket.SHUT_WR)
        except OSError:
            pass

    n = 0
    while True:
        guest, _ = server.accept()
        upstream = socket.socket(socket.AF_UNIX)
        upstream.connect(backend)
        log = open(f"{folder}/conn-{n:03d}.bin", "wb")
        n += 1
        threading.Thread(target=pump, args=(guest, upstream, log), daemon=True).start()
        threading.Thread(target=pump, args=(upstream, guest, None), daemon=True).start()

def convert(folder, class_index):
    frames = os.path.join(here, "corpus", "frames")
    planner = os.path.join(here, "corpus", "planner")
    os.makedirs(frames, exist_ok=True)
    os.makedirs(planner, exist_ok=True)

    def put(where, data):
        open(os.path.join(where, hashlib.sha1(data).hexdigest()), "wb").write(data)

    for name in sorted(os.listdir(folder)):
        stream = open(os.path.join(folder, name), "rb").read()
        if not stream:
            continue
        put(frames, b"\x01" + stream)
        at = 0
        while len(stream) - at >= 16:
            length, op, _flags, _request, _handle = struct.unpack_from("<IHHII", stream, at)
            body = stream[at + 16:at + 16 + length]
            if at == 0 and op == 1:   # PD_HELLO: the rest, after the harness's own handshake
                put(frames, b"\x00" + stream[16 + length:])
            if op == 6 and len(body) >= 16:   # PD_IOCTL: pd_ioctl, then the regions as the planner input wants them
                command, _count, argument = struct.unpack_from("<IIQ", body, 0)
                put(planner, bytes([class_index, 0, 0x13, 0]) + struct.pack("<IQ", command, argument) + body[16:])
            at += 16 + length

if __name__ == "__main__":
    if len(sys.argv) == 5 and sys.argv[1] == "record":
        record(*sys.argv[2:5])
    elif len(sys.argv) == 4 and sys.argv[1] == "convert":
        convert(sys.argv[2], int(sys.argv[3]))
    else:
        sys.exit(__doc__)

#!/usr/bin/env python3
"""A backend that breaks the protocol on purpose, to show what the preload frontend refuses.

It serves one node (any path) and answers each ioctl command in its own wrong way:
  0x5413  a reply that writes 8 bytes 64 KiB past the argument, memory the request never carried
  0x5414  PD_NEED rounds that never converge (each asks for one more region)
  0x5415  a reply whose region count runs far past the frame
  0x5416  a PD_NEED whose slot lies outside every region
  0x5417  a lawful reply (the argument's 8 bytes written back) that makes a new handle, 7: the program's
          argument is read-only memory, so the write-back fails and the handle must come back closed
  0x5418  a lawful reply writing the argument's 8 bytes with a new handle, 9, in its first 4 (a slot)
  0x5419  a reply naming a slot in the argument but writing no region: no bytes say which handle
Every PD_CLOSE is noted in SOCKET.closed ("close HANDLE" per line).
Usage: hostile-backend.py SOCKET   (prints "listening on unix:SOCKET" once it accepts)
"""
import os, socket, struct, sys, threading

HEADER = struct.Struct("<IHHII")
PD_HELLO, PD_OPEN, PD_CLOSE, PD_IOCTL, PD_REPLY, PD_NEED = 1, 2, 3, 6, 0x80, 0x81
PD_DONE_RESULT_HANDLE = 1

def receive(conn, n):
    data = b""
    while len(data) < n:
        chunk = conn.recv(n - len(data))
        if not chunk:
            raise EOFError
        data += chunk
    return data

def send(conn, op, request, body):
    conn.sendall(HEADER.pack(len(body), op, 0, request, 0) + body)

def reply(result=0, error=0, data=b""):
    return struct.pack("<qiI", result, error, 0) + data

def serve(conn):
    rounds = {}
    try:
        while True:
            length, op, flags, request, handle = HEADER.unpack(receive(conn, 16))
            body = receive(conn, length)
            if op == PD_HELLO:
                send(conn, PD_REPLY, request, struct.pack("<IHHIIII", 0x45434450, 1, 0, 3, 1, 0, 7))
            elif op == PD_OPEN:
                send(conn, PD_REPLY, request, reply(1, 0, struct.pack("<IIQQ", 0o20666, 0, 0x8801, 0)))
            elif op == PD_IOCTL:
                command, count, argument = struct.unpack_from("<IIQ", body)
                if command == 0x5413:
                    done = struct.pack("<IIII", 1, 0, 0, 0) + struct.pack("<QII", argument + 65536, 8, 0) + b"HOSTILE!"
                    send(conn, PD_REPLY, request, reply(0, 0, done))
                elif command == 0x5414:
                    n = rounds[request] = rounds.get(request, 0) + 1
                    send(conn, PD_NEED, request, struct.pack("<IIII", 1, 0, 0, 0) + struct.pack("<QII", argument + 8 * n, 8, 0))
                elif command == 0x5415:
                    send(conn, PD_REPLY, request, reply(0, 0, struct.pack("<IIII", 0x7fffffff, 0, 0, 0)))
                elif command == 0x5416:
                    send(conn, PD_NEED, request, struct.pack("<IIII", 0, 1, 0, 0) + struct.pack("<QII", argument + 4096, 4, 1))
                elif command in (0x5418, 0x5419) and count == 0:
                    send(conn, PD_NEED, request, struct.pack("<IIII", 1, 0, 0, 0) + struct.pack("<QII", argument, 8, 0))
                elif command == 0x5418:
                    done = struct.pack("<IIII", 1, 1, 0, 0) + struct.pack("<QII", argument, 8, 0) + struct.pack("<iI", 9, 0) \
                        + struct.pack("<QII", argument, 4, 2)
                    send(conn, PD_REPLY, request, reply(0, 0, done))
                elif command == 0x5419:
                    send(conn, PD_REPLY, request, reply(0, 0, struct.pack("<IIII", 0, 1, 0, 0) + struct.pack("<QII", argument, 4, 2)))
                elif command == 0x5417 and count == 0:
                    send(conn, PD_NEED, request, struct.pack("<IIII", 1, 0, 0, 0) + struct.pack("<QII", argument, 8, 0))
                elif command == 0x5417:
                    done = struct.pack("<IIII", 1, 0, PD_DONE_RESULT_HANDLE, 0) + struct.pack("<QII", argument, 8, 0) + b"WRITTEN!"
                    send(conn, PD_REPLY, request, reply(7, 0, done))
                else:
                    send(conn, PD_REPLY, request, reply(-1, 25))
            elif op == PD_CLOSE:
                with open(sys.argv[1] + ".closed", "a") as log:
                    log.write("close %d\n" % handle)
                send(conn, PD_REPLY, request, reply())
            else:
                send(conn, PD_REPLY, request, reply())
    except (EOFError, OSError):
        conn.close()

server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
server.bind(sys.argv[1])
server.listen(16)
print("listening on unix:" + sys.argv[1], flush=True)
while True:
    conn, _ = server.accept()
    threading.Thread(target=serve, args=(conn,), daemon=True).start()

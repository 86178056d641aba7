#!/usr/bin/env python3
"""Seeds for the preload parser harnesses (Tests/Fuzz/C) from real traffic.

Sits between `paradice run` and a real backend on unix sockets, forwards every byte unchanged, and writes
each reply the preload frontend parses as a harness input (layout: Tests/Fuzz/C/fuzz_input.h), with the
call's real regions and the connection's real mirrors:
  preload_ioctl_reply/  PD_NEED and PD_IOCTL replies, with the regions the request carried
  preload_mirror/       PD_MMAP replies' initial contents, and ioctl replies' pushed mapping ranges
  preload_hello/        handshake replies
Usage: capture-seeds.py LISTEN_SOCKET BACKEND_SOCKET OUTPUT_FOLDER   (stops on SIGTERM)
"""
import hashlib, os, socket, struct, sys, threading

HEADER = struct.Struct("<IHHII")
PD_HELLO, PD_IOCTL, PD_MMAP, PD_REPLY, PD_NEED = 1, 6, 17, 0x80, 0x81

def frames(sock, sink):
    buffer = b""
    while True:
        chunk = sock.recv(65536)
        if not chunk:
            return
        sink.sendall(chunk)
        buffer += chunk
        while len(buffer) >= 16:
            length, op, flags, request, handle = HEADER.unpack_from(buffer)
            if len(buffer) < 16 + length:
                break
            yield op, flags, request, handle, buffer[16:16 + length]
            buffer = buffer[16 + length:]

def save(folder, kind, data):
    os.makedirs(folder, exist_ok=True)
    name = hashlib.sha1(data).hexdigest()[:16]
    with open(os.path.join(folder, name), "wb") as f:
        f.write(data)

def call_input(kind, regions, mirrors, body):
    regions, mirrors = regions[:16], mirrors[:8]
    out = bytes([kind, len(regions), len(mirrors)])
    for address, length in regions:
        out += struct.pack("<QI", address, length % 65536)
    for mapping, length in mirrors:
        out += struct.pack("<II", mapping, length % 65536)
    return out + body

def regions_of(body):
    command, count, argument = struct.unpack_from("<IIQ", body)
    at, regions = 16, []
    for _ in range(count):
        address, length, _ = struct.unpack_from("<QII", body, at)
        regions.append((address, length))
        at += 16 + (length + 7) // 8 * 8
    return regions

def session(client, output, backend_path):
    backend = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    backend.connect(backend_path)
    requests, mirrors = {}, []
    def upstream():
        try:
            for op, flags, request, handle, body in frames(client, backend):
                requests[request] = (op, body)
        except OSError:
            pass
        backend.close()
    threading.Thread(target=upstream, daemon=True).start()
    try:
        for op, flags, request, handle, body in frames(backend, client):
            asked = requests.get(request)
            if not asked:
                continue
            if asked[0] == PD_HELLO and op == PD_REPLY:
                save(os.path.join(output, "preload_hello"), 0, body)
            elif asked[0] == PD_MMAP and op == PD_REPLY and len(body) >= 16:
                result, error = struct.unpack_from("<qi", body)
                if error == 0:
                    length = struct.unpack_from("<QQ", asked[1])[1]
                    mirrors.append((result & 0xffffffff, length))
                    if len(body) > 16:
                        save(os.path.join(output, "preload_mirror"), 0,
                             call_input(0, [], [(result & 0xffffffff, length)], body[16:]))
            elif asked[0] == PD_IOCTL:
                regions = regions_of(asked[1])
                if op == PD_NEED:
                    save(os.path.join(output, "preload_ioctl_reply"), 0, call_input(0, regions, mirrors, body))
                elif op == PD_REPLY and len(body) > 16:
                    save(os.path.join(output, "preload_ioctl_reply"), 0, call_input(1, regions, mirrors, body[16:]))
                    done = struct.unpack_from("<IIII", body, 16)
                    if done[3] > 0:   # pushed mapping ranges: after the regions and slots
                        at = 32
                        for _ in range(done[0]):
                            at += 16 + (struct.unpack_from("<QI", body, at)[1] + 7) // 8 * 8
                        at += 16 * done[1]
                        save(os.path.join(output, "preload_mirror"), 0,
                             call_input(1, [], mirrors, struct.pack("<II", done[3], 0) + body[at:]))
    except OSError:
        pass
    client.close()

def main():
    listen_path, backend_path, output = sys.argv[1:4]
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(listen_path)
    server.listen(64)
    while True:
        client, _ = server.accept()
        threading.Thread(target=session, args=(client, output, backend_path), daemon=True).start()

if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""Converts one raw video frame (YUYV 4:2:2, as v4l2-ctl --stream-to writes it) to a PNG file.

Usage: frame2png.py RAW WIDTH HEIGHT OUT.png [FRAME_INDEX]
Standard library only: the PNG is written with zlib and struct.
"""
import struct
import sys
import zlib


def clamp(v):
    return 0 if v < 0 else 255 if v > 255 else v


def yuyv_to_rgb_rows(frame, width, height):
    rows = []
    stride = width * 2
    for y in range(height):
        line = frame[y * stride:(y + 1) * stride]
        row = bytearray(b"\x00")            # PNG filter type 0 for the row
        for x in range(0, width, 2):
            y0, u, y1, v = line[2 * x], line[2 * x + 1], line[2 * x + 2], line[2 * x + 3]
            d, e = u - 128, v - 128
            for luma in (y0, y1):
                c = luma - 16
                row += bytes((clamp((298 * c + 409 * e + 128) >> 8),
                              clamp((298 * c - 100 * d - 208 * e + 128) >> 8),
                              clamp((298 * c + 516 * d + 128) >> 8)))
        rows.append(bytes(row))
    return b"".join(rows)


def chunk(kind, data):
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def main():
    raw, width, height, out = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
    index = int(sys.argv[5]) if len(sys.argv) > 5 else 0
    size = width * height * 2
    with open(raw, "rb") as f:
        f.seek(index * size)
        frame = f.read(size)
    if len(frame) != size:
        sys.exit(f"frame2png: {raw} holds no frame {index} of {width}x{height} YUYV")
    png = b"\x89PNG\r\n\x1a\n"
    png += chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
    png += chunk(b"IDAT", zlib.compress(yuyv_to_rgb_rows(frame, width, height), 6))
    png += chunk(b"IEND", b"")
    with open(out, "wb") as f:
        f.write(png)


if __name__ == "__main__":
    main()

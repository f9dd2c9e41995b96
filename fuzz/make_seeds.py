#!/usr/bin/env python3
"""Writes the fuzzer's seed bundles into fuzz/seeds/ (small, committed; rerun to refresh).

The files are zips named *.bin: the repository ignores *.zip.
  root-stored.bin      app.json, stack.json and code at the root, stored
  folder-deflated.bin  everything under one top folder, deflated, plus macOS __MACOSX/ entries
  zip64.bin            zip64 end records and zip64 extra fields (written by hand below)
"""
import io
import json
import os
import struct
import zipfile
import zlib

HERE = os.path.dirname(os.path.abspath(__file__))
SEEDS = os.path.join(HERE, "seeds")

APP = json.dumps({"name": "hello-app", "defaults": {"instance": {"connect": False}}}).encode()
STACK = json.dumps(
    {
        "name": "hello",
        "instances": {
            "greeter": {
                "image": "ami-12345678",
                "type": "t3.micro",
                "code": "./src/hello",
                "command": "python3 hello.py",
                "environment": {"GREETING": "hi"},
            }
        },
    }
).encode()
CODE = b"print('hello')\n"


def zip_with(entries, method):
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as z:
        for name, data in entries:
            info = zipfile.ZipInfo(name, date_time=(2024, 1, 1, 0, 0, 0))
            info.compress_type = method
            info.external_attr = (0o40755 if name.endswith("/") else 0o100644) << 16
            z.writestr(info, data)
    return out.getvalue()


def zip64(entries):
    """A zip whose every entry and end record uses zip64 fields."""
    out, cd = bytearray(), bytearray()
    for name, data in entries:
        name = name.encode()
        comp = zlib.compressobj(6, zlib.DEFLATED, -15)
        packed = comp.compress(data) + comp.flush()
        crc = zlib.crc32(data)
        offset = len(out)
        local_extra = struct.pack("<HHQQ", 1, 16, len(data), len(packed))
        out += struct.pack("<IHHHHHIIIHH", 0x04034B50, 45, 0, 8, 0, 0x21, crc, 0xFFFFFFFF, 0xFFFFFFFF, len(name), len(local_extra))
        out += name + local_extra + packed
        extra = struct.pack("<HHQQQ", 1, 24, len(data), len(packed), offset)
        cd += struct.pack(
            "<IHHHHHHIIIHHHHHII", 0x02014B50, 0x031E, 45, 0, 8, 0, 0x21, crc, 0xFFFFFFFF, 0xFFFFFFFF,
            len(name), len(extra), 0, 0, 0, 0o100644 << 16, 0xFFFFFFFF,
        )
        cd += name + extra
    cd_offset = len(out)
    out += cd
    eocd64 = len(out)
    n = len(entries)
    out += struct.pack("<IQHHIIQQQQ", 0x06064B50, 44, 45, 45, 0, 0, n, n, len(cd), cd_offset)
    out += struct.pack("<IIQI", 0x07064B50, 0, eocd64, 1)
    out += struct.pack("<IHHHHIIH", 0x06054B50, 0, 0, 0xFFFF, 0xFFFF, 0xFFFFFFFF, 0xFFFFFFFF, 0)
    return bytes(out)


def main():
    os.makedirs(SEEDS, exist_ok=True)
    seeds = {
        "root-stored.bin": zip_with(
            [("app.json", APP), ("src/", b""), ("src/hello/", b""), ("src/hello/hello.py", CODE), ("stack.json", STACK)],
            zipfile.ZIP_STORED,
        ),
        "folder-deflated.bin": zip_with(
            [
                ("hello/", b""),
                ("hello/app.json", APP),
                ("hello/stack.json", STACK),
                ("hello/src/hello/hello.py", CODE),
                ("__MACOSX/hello/._app.json", b"\x00\x05\x16\x07\x00\x02\x00\x00"),
            ],
            zipfile.ZIP_DEFLATED,
        ),
        "zip64.bin": zip64([("app.json", APP), ("stack.json", STACK), ("src/hello/hello.py", CODE)]),
    }
    for name, data in seeds.items():
        with open(os.path.join(SEEDS, name), "wb") as f:
            f.write(data)
        print(f"{name}: {len(data)} bytes")


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""Writes the seed corpora under fuzz/seeds/<target>/.

stun_message: the RFC 5769 test vectors, taken from crates/umbra-turn/tests/rfc5769.rs (so
they stay the ones the unit tests check), plus a few TURN messages and ChannelData frames.
wire_frames: an invite link. Run from anywhere: python3 fuzz/seeds/make_seeds.py
"""
import hashlib
import hmac
import os
import re
import struct
import zlib

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
RFC5769 = os.path.join(ROOT, "crates", "umbra-turn", "tests", "rfc5769.rs")
MAGIC = 0x2112A442


def write(target, name, data):
    d = os.path.join(HERE, target)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, name), "wb") as f:
        f.write(data)


def rfc5769_vectors():
    src = open(RFC5769, encoding="utf-8").read()
    for name, body in re.findall(r"const (\w+): \[u8; \d+\] = \[(.*?)\];", src, re.S):
        yield name, bytes(int(x, 16) for x in re.findall(r"0x([0-9a-fA-F]{2})", body))


def attr(typ, value):
    pad = (4 - len(value) % 4) % 4
    return struct.pack("!HH", typ, len(value)) + value + b"\0" * pad


def message(mtype, tid, attrs, key=None, fingerprint=True):
    body = b"".join(attrs)
    if key is not None:
        head = struct.pack("!HHI", mtype, len(body) + 24, MAGIC) + tid
        mac = hmac.new(key, head + body, hashlib.sha1).digest()
        body += attr(0x0008, mac)
    if fingerprint:
        head = struct.pack("!HHI", mtype, len(body) + 8, MAGIC) + tid
        crc = (zlib.crc32(head + body) ^ 0x5354554E) & 0xFFFFFFFF
        body += attr(0x8028, struct.pack("!I", crc))
    return struct.pack("!HHI", mtype, len(body), MAGIC) + tid + body


def xor_addr(ip4, port):
    x = bytes(a ^ b for a, b in zip(ip4, struct.pack("!I", MAGIC)))
    return struct.pack("!BBH", 0, 1, port ^ (MAGIC >> 16)) + x


def main():
    n = 0
    for name, data in rfc5769_vectors():
        if name.startswith("SAMPLE"):
            write("stun_message", f"rfc5769-{name.lower()}", data)
            n += 1
    tid = bytes(range(1, 13))
    key = hashlib.md5(b"alice:umbra.fuzz:pw-a").digest()
    seeds = {
        "binding-request": message(0x0001, tid, []),
        "allocate-unauth": message(0x0003, tid, [attr(0x0019, b"\x11\0\0\0")]),
        "allocate-auth": message(
            0x0003,
            tid,
            [
                attr(0x0019, b"\x11\0\0\0"),
                attr(0x000D, struct.pack("!I", 600)),
                attr(0x0006, b"alice"),
                attr(0x0014, b"umbra.fuzz"),
                attr(0x0015, b"nonce-value"),
            ],
            key=key,
        ),
        "create-permission": message(
            0x0008, tid, [attr(0x0012, xor_addr(bytes([192, 0, 2, 1]), 50001))], key=key
        ),
        "channel-bind": message(
            0x0009,
            tid,
            [attr(0x000C, b"\x40\x00\0\0"), attr(0x0012, xor_addr(bytes([192, 0, 2, 1]), 50001))],
            key=key,
        ),
        "send-indication": message(
            0x0016,
            tid,
            [attr(0x0012, xor_addr(bytes([192, 0, 2, 1]), 50001)), attr(0x0013, b"hello")],
            fingerprint=False,
        ),
        "channel-data": b"\x40\x00\x00\x05hello",
        "channel-data-padded": b"\x40\x01\x00\x05hello\0\0\0",
        "two-frames": b"\x40\x00\x00\x01x\0\0\0" + message(0x0001, tid, []),
    }
    for name, data in seeds.items():
        write("stun_message", name, data)
        n += 1
    invite = b"\x01umbra://join?host=127.0.0.1&port=7777&key=" + b"A" * 42 + b"E"
    write("wire_frames", "invite", invite)
    # A ClientFrame{request_id: 1, ping{nonce: 2}} guess is left to the fuzzer; an empty
    # frame and a length prefix are enough to start from.
    write("wire_frames", "empty-frames", b"\x01\0\0\0\0\0\0\0\0")
    print(f"wrote {n} stun_message seeds and 2 wire_frames seeds under {HERE}")


if __name__ == "__main__":
    main()

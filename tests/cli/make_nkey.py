#!/usr/bin/env python3
# make_nkey.py DIR NAME -- a user nkey made the way `nk -gen user` makes one, without nk (not in
# Debian): an Ed25519 key from openssl, its seed written as DIR/NAME.nk ("SU...") and its public
# key as DIR/NAME.pub ("U..."), each base32 (RFC 4648, no padding) of a prefix, the key and a
# CRC-16/XMODEM, little-endian. For tests/cli/test_auth.sh: the library derives the public key
# from the seed by itself (libatomic/src/nkey.c), so the two are made independently here.
import base64, os, subprocess, sys

d, name = sys.argv[1], sys.argv[2]
pem = os.path.join(d, name + ".pem")
subprocess.run(["openssl", "genpkey", "-algorithm", "ed25519", "-out", pem], check=True, capture_output=True)
priv = subprocess.run(["openssl", "pkey", "-in", pem, "-outform", "DER"], check=True, capture_output=True).stdout[-32:]
pub = subprocess.run(["openssl", "pkey", "-in", pem, "-pubout", "-outform", "DER"], check=True,
                     capture_output=True).stdout[-32:]
os.unlink(pem)

def crc16(data):
    c = 0
    for x in data:
        c ^= x << 8
        for _ in range(8):
            c = ((c << 1) ^ 0x1021 if c & 0x8000 else c << 1) & 0xFFFF
    return c

def encode(raw):
    c = crc16(raw)
    return base64.b32encode(raw + bytes([c & 0xFF, c >> 8])).decode().rstrip("=")

user = 20 << 3
seed = encode(bytes([(18 << 3) | (user >> 5), (user & 31) << 3]) + priv)
fd = os.open(os.path.join(d, name + ".nk"), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
os.write(fd, (seed + "\n").encode())
os.close(fd)
with open(os.path.join(d, name + ".pub"), "w") as f:
    f.write(encode(bytes([user]) + pub) + "\n")

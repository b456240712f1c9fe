#!/usr/bin/env python3
# nats_probe.py -- the NATS text protocol by hand, for tests/security: a
# client that connects as USER, sends what it is told, and prints what the
# server answers (a `-ERR 'Permissions Violation ...'` is the proof of a
# refusal; a message that arrives is the proof of a leak). Shared by
# test_least_privilege.sh (memory mode) and test_least_privilege_durable.sh.
#
# nats_probe.py PORT USER OP...  (password in PROBE_PASSWORD). OPs:
#   pub SUBJECT REPLY PAYLOAD     REPLY "-" for none; PAYLOAD "-" empty, "f1:TEXT" a protobuf
#                                 message whose field 1 is the string TEXT
#   hpub SUBJECT REPLY HEADER=VALUE PAYLOAD   the same with one header
#   sub SUBJECT QUEUE             QUEUE "-" for a plain subscription
#   want N                        after the PONG, wait (3 s at most) until N messages came
# Then PING; prints every line the server sent (INFO and PONG aside) until PONG (and the
# messages wanted); a message is followed by "  status: <its first header line>" (with headers)
# or "  data: <the start of its payload>" (without).
# Exit 0 on PONG, 4 when the server closed the connection, 5 on a timeout (3 s).
import json, os, socket, sys, time
port, user, ops = int(sys.argv[1]), sys.argv[2], sys.argv[3:]
def payload(spec):
    if spec == "-":
        return b""
    if spec.startswith("f1:"):
        text = spec[3:].encode()
        return b"\x0a" + bytes([len(text)]) + text
    return spec.encode()
try:
    s = socket.create_connection(("127.0.0.1", port), timeout=3)
    f = s.makefile("rb")
    f.readline()  # INFO
    out = [b"CONNECT " + json.dumps({"user": user, "pass": os.environ.get("PROBE_PASSWORD", ""), "verbose": False,
                                     "pedantic": False, "headers": True, "protocol": 1}).encode()]
    sid, i, want = 0, 0, 0
    while i < len(ops):
        if ops[i] == "pub":
            subj, reply, data = ops[i + 1], ops[i + 2], payload(ops[i + 3])
            out.append(b"PUB %s %s%d\r\n%s" % (subj.encode(), b"" if reply == "-" else reply.encode() + b" ",
                                                len(data), data))
            i += 4
        elif ops[i] == "sub":
            sid += 1
            queue = "" if ops[i + 2] == "-" else ops[i + 2] + " "
            out.append(b"SUB %s %s%d" % (ops[i + 1].encode(), queue.encode(), sid))
            i += 3
        elif ops[i] == "hpub":
            subj, reply, header, data = ops[i + 1], ops[i + 2], ops[i + 3], payload(ops[i + 4])
            k, _, v = header.partition("=")
            h = b"NATS/1.0\r\n%s: %s\r\n\r\n" % (k.encode(), v.encode())
            out.append(b"HPUB %s %s%d %d\r\n%s%s" % (subj.encode(), b"" if reply == "-" else reply.encode() + b" ",
                                                      len(h), len(h) + len(data), h, data))
            i += 5
        elif ops[i] == "want":
            want = int(ops[i + 1])
            i += 2
        else:
            sys.exit("probe.py: unknown op " + ops[i])
    out.append(b"PING")
    s.sendall(b"\r\n".join(out) + b"\r\n")
    deadline = time.time() + 3
    pong, msgs = False, 0
    while time.time() < deadline:
        line = f.readline()
        if not line:
            sys.exit(4)
        line = line.decode(errors="replace").rstrip("\r\n")
        if line == "PONG":
            pong = True
        elif line == "PING":
            s.sendall(b"PONG\r\n")
        elif line.startswith("MSG ") or line.startswith("HMSG "):
            body = f.read(int(line.split()[-1]) + 2)
            print(line)
            if line.startswith("HMSG "):
                print("  status: " + body.split(b"\r\n")[0].decode(errors="replace"))
            else:
                print("  data: " + body[:300].decode(errors="replace").rstrip("\r\n"))
            msgs += 1
        else:
            print(line)
        if pong and msgs >= want:
            sys.exit(0)
    sys.exit(5)
except (socket.timeout, ConnectionError):
    sys.exit(5)
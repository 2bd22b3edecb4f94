#!/usr/bin/python3
"""raw_wire.py - speaks raw bytes to a PostgreSQL-protocol server and reports
what came back, as JSON.  The bad-input specs drive the proxy with it.

    /usr/bin/python3 spec/clients/raw_wire.py SCRIPT.json   (or - for stdin)

SCRIPT:
    {"host": "127.0.0.1", "port": 6432,
     "parallel": 16,              # connections run at once (default: all)
     "connections": [ {"name": "a", "steps": [STEP, ...]}, ... ]}
A script with "steps" at the top level is one connection.

STEPs (each runs in order; times are seconds):
    {"send_hex": "0000000804d2162f"}              raw bytes
    {"startup": {"user": "postgres", ...},        a StartupMessage; optional
     "version": [3, 0], "length": N,              length word override,
     "truncate": N}                               send only its first N bytes
    {"msg": "Q", "text": "SELECT 1"}              type + length + text + NUL
    {"msg": "S"}                                  ... or an empty body
    {"msg": "B", "body_hex": "...",               ... or raw body; "length"
     "length": N}                                 overrides the length word
    {"random": {"seed": 1, "min": 1, "max": 2000}}  seeded random bytes
    {"random_msgs": {"seed": 1, "types": "QPB", "count": 3, "max": 300}}
                                                  well-framed messages of the
                                                  given types, random bodies
    {"random_startup": {"seed": 1, "max": 300, "broken": false}}
                                                  a StartupMessage with random
                                                  parameters (right length)
    {"cancel_of": "a", "key_add": 1}              CancelRequest built from the
                                                  BackendKeyData connection "a"
                                                  received (pid_add too)
    {"login": {"user": "postgres", "database": "postgres"}, "timeout": 5}
                                                  startup, then read until
                                                  ReadyForQuery or an error
    {"read": {"timeout": 2, "until": "Z"}}        read until a message of that
                                                  type, "close" (default) or
                                                  "any" (one message)
    {"sleep": 0.5}
    {"shutdown": "write"}                         half-close ("both" too)
    {"signal": "name"} / {"wait": "name", "timeout": 5}
                                                  order steps across connections

Output, one JSON object: {"elapsed": s, "results": [RESULT, ...]}, RESULT =
    name, connected, connect_error, sent_bytes, sent_hex (first 4 KB),
    received_hex (first 64 KB), received_bytes, messages [{type, len, status
    for Z, auth code for R}],
    errors [{S, V, C, M, ...}] (ErrorResponse fields), notices, ready (count of
    ReadyForQuery; messages carry its status), rows (DataRow values as text),
    commands (CommandComplete tags), backend_key {pid, key}, parse_error (bytes that do not
    frame as messages), closed (the server closed: EOF or reset), reset,
    closed_t, last_send_t, send_error, steps [{op, t, ...}], elapsed.
All times are seconds since the connection was opened.
"""
import json
import random
import socket
import struct
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor

MAX_SENT_HEX = 4096
MAX_RECV_HEX = 65536
CANCEL_CODE = 80877102


def startup_packet(params, version=(3, 0), length=None):
    body = struct.pack("!I", (version[0] << 16) | version[1])
    for k, v in params.items():
        body += k.encode() + b"\0" + str(v).encode() + b"\0"
    body += b"\0"
    n = len(body) + 4 if length is None else length
    return struct.pack("!I", n & 0xFFFFFFFF) + body


def message(mtype, body=b"", length=None):
    n = len(body) + 4 if length is None else length
    return mtype.encode("latin-1") + struct.pack("!I", n & 0xFFFFFFFF) + body


def random_messages(spec):
    rng = random.Random(spec.get("seed", 0))
    types = spec.get("types", "QPBDCESHdcfF")
    out = b""
    for _ in range(spec.get("count", 1)):
        t = rng.choice(types)
        body = bytes(rng.getrandbits(8) for _ in range(rng.randint(0, spec.get("max", 200))))
        out += message(t, body)
    return out


def random_bytes(spec):
    rng = random.Random(spec.get("seed", 0))
    n = spec["len"] if "len" in spec else rng.randint(spec.get("min", 1), spec.get("max", 2000))
    return bytes(rng.getrandbits(8) for _ in range(n))


def random_startup(spec):
    """A StartupMessage with a correct length word, mostly user=postgres,
    then random parameters: keys PostgreSQL and the proxy know or random
    ones, values of random bytes; "broken" drops the final terminator."""
    rng = random.Random(spec.get("seed", 0))
    keys = ["user", "database", "options", "replication", "application_name",
            "client_encoding", "DateStyle", "_pq_.x", "search_path"]

    def word(n):
        return bytes(rng.choice(range(1, 256)) for _ in range(n))

    body = struct.pack("!I", 3 << 16)
    if rng.random() < 0.8:
        body += b"user\0postgres\0"
    if rng.random() < 0.5:
        body += b"database\0postgres\0"
    for _ in range(rng.randint(0, 6)):
        key = rng.choice(keys).encode() if rng.random() < 0.7 else word(rng.randint(1, 20))
        if rng.random() < 0.2:
            value = b"-c " + word(rng.randint(0, 600)) + b"=" + word(rng.randint(0, 600))
        else:
            value = word(rng.randint(0, spec.get("max", 300)))
        body += key + b"\0" + value + b"\0"
    if not spec.get("broken"):
        body += b"\0"
    return struct.pack("!I", len(body) + 4) + body


def data_row(payload):
    """DataRow values as text (None for NULL)."""
    if len(payload) < 2:
        return None
    (n,) = struct.unpack("!H", payload[:2])
    pos, values = 2, []
    for _ in range(n):
        if pos + 4 > len(payload):
            return values
        (k,) = struct.unpack("!i", payload[pos:pos + 4])
        pos += 4
        if k < 0:
            values.append(None)
        else:
            values.append(payload[pos:pos + k].decode("utf-8", "replace"))
            pos += k
    return values


def error_fields(payload):
    fields = {}
    pos = 0
    while pos < len(payload) and payload[pos] != 0:
        code = chr(payload[pos])
        end = payload.find(b"\0", pos + 1)
        if end < 0:
            fields["_malformed"] = True
            break
        fields[code] = payload[pos + 1:end].decode("utf-8", "replace")
        pos = end + 1
    return fields


class Conn:
    def __init__(self, spec, shared):
        self.spec = spec
        self.shared = shared
        self.r = {
            "name": spec.get("name"), "connected": False, "sent_bytes": 0, "sent_hex": "",
            "received_bytes": 0, "received_hex": "", "messages": [], "errors": [],
            "notices": [], "rows": [], "commands": [], "ready": 0, "closed": False,
            "reset": False, "steps": [],
        }
        self.buf = b""      # bytes received, not yet framed
        self.sock = None
        self.t0 = time.monotonic()

    def t(self):
        return round(time.monotonic() - self.t0, 4)

    # ---------------------------------------------------------------- input
    def frame(self):
        """Frames complete server messages out of self.buf."""
        new = []
        while True:
            if self.r.get("parse_error"):
                return new
            if len(self.buf) < 5:
                return new
            mtype = chr(self.buf[0])
            (n,) = struct.unpack("!I", self.buf[1:5])
            if n < 4 or n > 1 << 30 or not (mtype.isalnum()):
                self.r["parse_error"] = self.buf[:64].hex()
                return new
            if len(self.buf) < n + 1:
                return new
            payload = self.buf[5:n + 1]
            self.buf = self.buf[n + 1:]
            m = {"type": mtype, "len": n}
            if mtype in ("E", "N"):
                fields = error_fields(payload)
                (self.r["errors"] if mtype == "E" else self.r["notices"]).append(fields)
            elif mtype == "Z":
                self.r["ready"] += 1
                m["status"] = payload[:1].decode("latin-1")
            elif mtype == "D":
                self.r["rows"].append(data_row(payload))
            elif mtype == "C":
                self.r["commands"].append(payload.rstrip(b"\0").decode("utf-8", "replace"))
            elif mtype == "R" and len(payload) >= 4:
                m["auth"] = struct.unpack("!I", payload[:4])[0]
            elif mtype == "K" and len(payload) == 8:
                pid, key = struct.unpack("!II", payload)
                self.r["backend_key"] = {"pid": pid, "key": key}
                self.shared["keys"][self.spec.get("name")] = (pid, key)
            self.r["messages"].append(m)
            new.append(m)

    def recv_some(self, deadline):
        """One recv until deadline: returns bytes read, 0 on close, None on timeout."""
        left = deadline - time.monotonic()
        if left <= 0:
            return None
        self.sock.settimeout(left)
        try:
            data = self.sock.recv(65536)
        except socket.timeout:
            return None
        except (ConnectionResetError, BrokenPipeError):
            self.r["reset"] = True
            data = b""
        except OSError as e:
            self.r["recv_error"] = str(e)
            data = b""
        if not data:
            if not self.r["closed"]:
                self.r["closed"] = True
                self.r["closed_t"] = self.t()
            return 0
        self.r["received_bytes"] += len(data)
        if len(self.r["received_hex"]) < 2 * MAX_RECV_HEX:
            self.r["received_hex"] += data.hex()[: 2 * MAX_RECV_HEX - len(self.r["received_hex"])]
        self.buf += data
        return len(data)

    def read(self, until, timeout):
        deadline = time.monotonic() + timeout
        start = self.t()
        got = 0
        reason = "timeout"
        while True:
            if self.r["closed"]:
                reason = "close"
                break
            n = self.recv_some(deadline)
            if n is None:
                break
            if n == 0:
                reason = "close"
                break
            got += n
            new = self.frame()
            if until == "any" and new:
                reason = "until"
                break
            # After a FATAL the server must close: keep reading to see it.
            fatal = any(m["type"] == "E" for m in new) and self.r["errors"][-1].get("S") == "FATAL"
            if until not in ("close", "any") and not fatal and any(m["type"] in until for m in new):
                reason = "until"
                break
        return {"t_start": start, "got": got, "reason": reason}

    # ---------------------------------------------------------------- output
    def send(self, data):
        self.r["last_send_t"] = self.t()
        if len(self.r["sent_hex"]) < 2 * MAX_SENT_HEX:
            self.r["sent_hex"] += data.hex()[: 2 * MAX_SENT_HEX - len(self.r["sent_hex"])]
        try:
            self.sock.sendall(data)
            self.r["sent_bytes"] += len(data)
            return True
        except OSError as e:
            self.r["send_error"] = e.__class__.__name__ + ": " + str(e)
            return False

    # ---------------------------------------------------------------- steps
    def step(self, s):
        rec = {"op": next(iter(s)), "t": self.t()}
        if "send_hex" in s:
            rec["ok"] = self.send(bytes.fromhex(s["send_hex"]))
        elif "startup" in s:
            pkt = startup_packet(s["startup"], tuple(s.get("version", (3, 0))), s.get("length"))
            if "truncate" in s:
                pkt = pkt[: s["truncate"]]
            rec["ok"] = self.send(pkt)
        elif "msg" in s:
            if "text" in s:
                body = s["text"].encode() + b"\0"
            else:
                body = bytes.fromhex(s.get("body_hex", ""))
            rec["ok"] = self.send(message(s["msg"], body, s.get("length")))
        elif "random" in s:
            rec["ok"] = self.send(random_bytes(s["random"]))
        elif "random_startup" in s:
            rec["ok"] = self.send(random_startup(s["random_startup"]))
        elif "random_msgs" in s:
            rec["ok"] = self.send(random_messages(s["random_msgs"]))
        elif "cancel_of" in s:
            pid, key = self.shared["keys"].get(s["cancel_of"], (0, 0))
            pid = (pid + s.get("pid_add", 0)) & 0xFFFFFFFF
            key = (key + s.get("key_add", 0)) & 0xFFFFFFFF
            rec["ok"] = self.send(struct.pack("!IIII", 16, CANCEL_CODE, pid, key))
        elif "login" in s:
            rec["ok"] = self.send(startup_packet(s["login"]))
            rec.update(self.read("Z", s.get("timeout", 5)))
        elif "read" in s:
            rd = s["read"]
            rec.update(self.read(rd.get("until", "close"), rd.get("timeout", 5)))
        elif "sleep" in s:
            time.sleep(s["sleep"])
        elif "shutdown" in s:
            how = socket.SHUT_RDWR if s["shutdown"] == "both" else socket.SHUT_WR
            try:
                self.sock.shutdown(how)
            except OSError as e:
                rec["error"] = str(e)
        elif "signal" in s:
            self.shared["event"](s["signal"]).set()
        elif "wait" in s:
            rec["ok"] = self.shared["event"](s["wait"]).wait(s.get("timeout", 10))
        else:
            rec["error"] = "unknown step"
        self.r["steps"].append(rec)

    def run(self, host, port):
        try:
            self.sock = socket.create_connection((host, port), timeout=5)
            self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self.r["connected"] = True
        except OSError as e:
            self.r["connect_error"] = str(e)
            self.r["elapsed"] = self.t()
            for s in self.spec.get("steps", []):  # let waiters go on
                if "signal" in s:
                    self.shared["event"](s["signal"]).set()
            return self.r
        try:
            for s in self.spec.get("steps", []):
                self.step(s)
        finally:
            self.sock.close()
        self.r["elapsed"] = self.t()
        return self.r


def main():
    src = sys.argv[1] if len(sys.argv) > 1 else "-"
    if src == "-":
        script = json.load(sys.stdin)
    else:
        with open(src) as f:
            script = json.load(f)
    conns = script.get("connections") or [
        {"name": script.get("name", "c"), "steps": script.get("steps", [])}]
    host = script.get("host", "127.0.0.1")
    port = int(script.get("port", 5432))
    events, lock = {}, threading.Lock()

    def event(name):
        with lock:
            return events.setdefault(name, threading.Event())

    shared = {"keys": {}, "event": event}
    t0 = time.monotonic()
    workers = max(1, min(len(conns), int(script.get("parallel", len(conns)))))
    with ThreadPoolExecutor(max_workers=workers) as pool:
        results = list(pool.map(lambda spec: Conn(spec, shared).run(host, port), conns))
    print(json.dumps({"elapsed": round(time.monotonic() - t0, 4), "results": results}))


if __name__ == "__main__":
    main()

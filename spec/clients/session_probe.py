#!/usr/bin/python3
"""Session probes the proxy specs run through psycopg2 (libpq).

usage: session_probe.py MODE   (connection from PGHOST/PGPORT/... env)

cancel       runs SELECT pg_sleep(30), cancels it from another thread after
             0.5 s, reports the SQLSTATE, seconds from cancel to return, and
             that the connection still works.
hold_tx DIR  BEGIN; INSERT ...; creates DIR/ready, waits until DIR/go
             exists, then COMMITs (the spec signals the proxy meanwhile).
Prints one JSON object on stdout.
"""
import json
import os
import sys
import threading
import time

import psycopg2


def cancel():
    conn = psycopg2.connect(connect_timeout=10)
    conn.autocommit = True
    cur = conn.cursor()
    out = {"ok": True}
    cancelled_at = []

    def later():
        time.sleep(0.5)
        cancelled_at.append(time.monotonic())
        conn.cancel()

    t = threading.Thread(target=later)
    t.start()
    try:
        cur.execute("SELECT pg_sleep(30)")
        out["sqlstate"] = None
    except psycopg2.Error as e:
        out["sqlstate"] = e.pgcode
        out["message"] = str(e).strip()
    returned = time.monotonic()
    t.join()
    out["seconds_after_cancel"] = round(returned - cancelled_at[0], 3)
    cur.execute("SELECT 41 + 1")
    out["after"] = cur.fetchone()[0]
    conn.close()
    return out


def hold_tx():
    folder = sys.argv[2]
    conn = psycopg2.connect(connect_timeout=10)
    cur = conn.cursor()
    cur.execute("INSERT INTO held (v) VALUES ('in tx') RETURNING pg_backend_pid()")
    pid = cur.fetchone()[0]
    open(os.path.join(folder, "ready"), "w").close()
    deadline = time.monotonic() + 30
    while not os.path.exists(os.path.join(folder, "go")) and time.monotonic() < deadline:
        time.sleep(0.02)
    cur.execute("SELECT pg_backend_pid()")
    same = cur.fetchone()[0] == pid
    conn.commit()
    out = {"ok": True, "same_backend": same, "committed": True}
    try:
        cur.execute("SELECT 1")
        out["after_commit"] = "open"
    except psycopg2.Error as e:
        out["after_commit"] = e.pgcode or "closed"
    except Exception:  # noqa: BLE001 - the proxy may close the socket
        out["after_commit"] = "closed"
    return out


def main():
    mode = sys.argv[1]
    try:
        out = {"cancel": cancel, "hold_tx": hold_tx}[mode]()
    except Exception as e:  # noqa: BLE001 - reported to the spec
        out = {"ok": False, "error": "%s: %s" % (type(e).__name__, e)}
    print(json.dumps(out, sort_keys=True))


if __name__ == "__main__":
    main()

#!/usr/bin/python3
"""Real-client check with psycopg2 (libpq underneath).

Connects with the libpq environment (PGHOST, PGPORT, PGUSER, PGDATABASE),
exercises transactions, executemany, a server-side named cursor, read/write
splitting, type round trips, error recovery and session settings, then prints
ONE JSON object with what it saw. The Lua spec judges the values.

usage: psycopg2_client.py [TABLE_NAME]
"""
import json
import os
import sys
import threading
import time

import psycopg2
import psycopg2.errors

TABLE = sys.argv[1] if len(sys.argv) > 1 else "sy_cli_py_%d" % os.getpid()
TIMEOUT = int(os.environ.get("SY_CLIENT_TIMEOUT", "60"))
BLOB = bytes(range(256))
UNICODE = "h\u00e9llo \u2603 \u65e5\u672c \U0001F680"

out = {"ok": False, "client": "psycopg2", "version": psycopg2.__version__, "table": TABLE}
step = "connect"


def fail(error, code=1):
    out["ok"], out["step"], out["error"] = False, step, error
    print(json.dumps(out, sort_keys=True), flush=True)
    os._exit(code)  # also from the watchdog thread: a blocked libpq call never returns


def where(cur):
    """(in_recovery, port) of the server that ran this statement."""
    cur.execute("SELECT pg_is_in_recovery(), inet_server_port()")
    return cur.fetchone()


def poll(cur, sql, want, args=None, seconds=5.0):
    """Run a read until it returns `want` (replication is asynchronous)."""
    deadline = time.monotonic() + seconds
    while True:
        try:
            cur.execute(sql, args)
            got = cur.fetchone()[0]
        except psycopg2.errors.UndefinedTable:
            # The CREATE TABLE has not reached this replica yet.
            if time.monotonic() > deadline or not cur.connection.autocommit:
                raise
            got = None
        if got == want or time.monotonic() > deadline:
            return got
        time.sleep(0.05)


def main():
    global step
    t0 = time.monotonic()
    conn = psycopg2.connect(connect_timeout=10, application_name="sy_psycopg2_client")
    out["server_version"] = conn.server_version
    cur = conn.cursor()
    primary_txns = 0   # transactions whose statements ran on a primary

    step = "create_table"
    conn.autocommit = False
    cur.execute("CREATE TABLE %s (id int PRIMARY KEY, name text, data bytea, note text)" % TABLE)
    conn.commit()

    step = "insert_commit"
    for i in range(1, 6):
        cur.execute("INSERT INTO " + TABLE + " (id, name) VALUES (%s, %s)", (i, "row %d" % i))
    primary_txns += not where(cur)[0]
    conn.commit()

    step = "rollback"
    cur.execute("INSERT INTO " + TABLE + " (id, name) VALUES (%s, %s)", (100, "rolled back"))
    cur.execute("SELECT count(*) FROM " + TABLE + " WHERE id = 100")
    out["rollback_seen_inside"] = cur.fetchone()[0]
    conn.rollback()
    cur.execute("SELECT count(*) FROM " + TABLE + " WHERE id = 100")
    out["rollback_seen_after"] = cur.fetchone()[0]
    conn.commit()

    step = "executemany"
    cur.executemany("INSERT INTO " + TABLE + " (id, name) VALUES (%s, %s)",
                    [(i, "many %d" % i) for i in range(6, 56)])
    out["executemany_rowcount"] = cur.rowcount
    conn.commit()

    step = "types"
    cur.execute("INSERT INTO " + TABLE + " (id, name, data, note) VALUES (%s, %s, %s, %s)",
                (1000, UNICODE, psycopg2.Binary(BLOB), None))
    conn.commit()
    cur.execute("SELECT name, data, note FROM " + TABLE + " WHERE id = 1000")
    name, data, note = cur.fetchone()
    primary_txns += not where(cur)[0]
    conn.commit()
    out["roundtrip_txn"] = name == UNICODE and bytes(data) == BLOB and note is None

    step = "named_cursor"
    named = conn.cursor(name="sy_named_cur")
    named.itersize = 7
    named.execute("SELECT id FROM " + TABLE + " ORDER BY id")
    ids = [r[0] for r in named]
    named.close()
    out["named_cursor_rows"] = len(ids)
    out["named_cursor_ordered"] = ids == sorted(ids)
    fm = conn.cursor(name="sy_fetchmany_cur")
    fm.execute("SELECT id FROM " + TABLE + " ORDER BY id")
    chunks, rows = 0, 0
    while True:
        batch = fm.fetchmany(10)
        if not batch:
            break
        chunks, rows = chunks + 1, rows + len(batch)
    fm.close()
    out["fetchmany_rows"], out["fetchmany_chunks"] = rows, chunks
    primary_txns += not where(cur)[0]
    conn.commit()
    out["primary_txns"] = primary_txns

    step = "reads_autocommit"
    conn.autocommit = True
    t = time.monotonic()
    out["visible_rows"] = poll(cur, "SELECT count(*) FROM " + TABLE, 56)
    out["visible_wait_ms"] = int((time.monotonic() - t) * 1000)
    replica, primary, ports = 0, 0, set()
    for _ in range(10):
        rec, port = where(cur)
        replica, primary = replica + bool(rec), primary + (not rec)
        ports.add(port)
    out["replica_reads"], out["primary_reads"] = replica, primary
    out["read_ports"] = sorted(ports)
    cur.execute("SELECT name, data, note FROM " + TABLE + " WHERE id = 1000")
    name, data, note = cur.fetchone()
    out["roundtrip_read"] = name == UNICODE and bytes(data) == BLOB and note is None
    cur.execute("SELECT %s::text, %s::bytea, %s::int IS NULL", (UNICODE, psycopg2.Binary(BLOB), None))
    a, b, c = cur.fetchone()
    out["roundtrip_params"] = a == UNICODE and bytes(b) == BLOB and c is True

    step = "errors"
    try:
        cur.execute("SELECT 1 / 0")
        out["error_sqlstate"] = None
    except psycopg2.errors.DivisionByZero as e:
        out["error_sqlstate"] = e.pgcode
    cur.execute("SELECT 41 + 1")
    out["after_error_autocommit"] = cur.fetchone()[0]
    conn.autocommit = False
    try:
        cur.execute("SELECT 1 / 0")
    except psycopg2.errors.DivisionByZero:
        pass
    try:
        cur.execute("SELECT 1")
        out["aborted_txn_sqlstate"] = None
    except psycopg2.errors.InFailedSqlTransaction as e:
        out["aborted_txn_sqlstate"] = e.pgcode
    conn.rollback()
    cur.execute("SELECT 42")
    out["after_error_txn"] = cur.fetchone()[0]
    conn.commit()

    step = "session_settings"
    cur.execute("SET search_path TO sy_clients_schema, public")
    cur.execute("SET TimeZone TO 'Asia/Tokyo'")
    conn.commit()
    cur.execute("SHOW search_path")
    sp = cur.fetchone()[0]
    cur.execute("SHOW TimeZone")
    tz = cur.fetchone()[0]
    conn.commit()
    out["txn_search_path"], out["txn_timezone"] = sp, tz
    conn.autocommit = True
    seen = set()
    for _ in range(6):  # plain reads: may run on any replica
        cur.execute("SELECT current_setting('search_path'), current_setting('TimeZone'),"
                    " '2020-01-01 00:00:00+00'::timestamptz::text")
        seen.add(cur.fetchone())
    out["read_settings"] = sorted(list(s) for s in seen)
    out["settings_persist"] = (sp == "sy_clients_schema, public" and tz == "Asia/Tokyo" and
                               seen == {("sy_clients_schema, public", "Asia/Tokyo",
                                         "2020-01-01 09:00:00+09")})

    step = "drop_table"
    cur.execute("DROP TABLE " + TABLE)
    out["dropped"] = True
    conn.close()
    out["elapsed_ms"] = int((time.monotonic() - t0) * 1000)
    out["ok"] = True


if __name__ == "__main__":
    watchdog = threading.Timer(TIMEOUT, fail, ["timeout: no result after %d s" % TIMEOUT])
    watchdog.daemon = True
    watchdog.start()
    try:
        main()
    except Exception as e:  # report, never hang or trace
        fail(("%s: %s" % (type(e).__name__, e)).strip())
    print(json.dumps(out, sort_keys=True), flush=True)

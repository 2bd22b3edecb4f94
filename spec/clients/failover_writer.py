#!/usr/bin/python3
"""Writes through the proxy while a failover happens.

One connection (libpq environment: PGHOST, PGPORT, ...), autocommit, one
INSERT per statement for SECONDS seconds; after a failed statement it
reconnects if the connection is gone.  Prints one line per statement:
"ok ID PORT T" (PORT: the server that ran it, T: seconds since start) or
"fail ID SQLSTATE T MESSAGE".  The Lua spec judges the lines.

usage: failover_writer.py SECONDS
"""
import os
import sys
import time

import psycopg2

SECONDS = float(sys.argv[1])
start = time.monotonic()
conn = None
i = 0
while time.monotonic() - start < SECONDS:
    i += 1
    try:
        if conn is None or conn.closed:
            conn = psycopg2.connect("")
            conn.autocommit = True
        with conn.cursor() as cur:
            cur.execute("INSERT INTO fo_proxy (v, port) VALUES (%s, inet_server_port()) RETURNING port", (i,))
            port = cur.fetchone()[0]
        print("ok %d %d %.3f" % (i, port, time.monotonic() - start), flush=True)
    except psycopg2.Error as e:
        print("fail %d %s %.3f %s" % (i, e.pgcode, time.monotonic() - start,
                                      str(e).strip().replace("\n", " ")), flush=True)
        if conn is not None and conn.closed:
            conn = None
        time.sleep(0.01)
os._exit(0)

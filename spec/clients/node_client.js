#!/usr/bin/env node
// Real-client check with node-postgres (npm pg 8, installed in spec/clients).
//
// Connects with the libpq environment (PGHOST, PGPORT, PGUSER, PGDATABASE),
// exercises Client and Pool: named prepared statements reused from several
// pooled connections at once, parameter types, a transaction with a named
// statement inside, read/write splitting, paged Execute (row limit + Flush),
// error recovery and LISTEN/NOTIFY, then prints ONE JSON object with what it
// saw. The Lua spec judges the values.
//
// usage: node node_client.js [TABLE_NAME]
'use strict'

const pg = require('pg')

const TABLE = process.argv[2] || `sy_cli_node_${process.pid}`
const TIMEOUT = Number(process.env.SY_CLIENT_TIMEOUT || 60)
const CONF = { connectionTimeoutMillis: 10000, query_timeout: 15000, application_name: 'sy_node_client' }
const TS = new Date('2020-01-02T03:04:05.678Z')

const out = { ok: false, client: 'node-postgres', version: require('pg/package.json').version, table: TABLE }
let step = 'connect'

function finish(code) {
  process.stdout.write(JSON.stringify(out) + '\n', () => process.exit(code))
}

function fail(err) {
  out.ok = false
  out.step = step
  out.error = err && err.message ? err.message : String(err)
  if (err && err.code) out.error_code = err.code
  finish(1)
}

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms))

// Run a read until it returns `want` (replication is asynchronous).
async function poll(db, text, want, seconds = 5) {
  const deadline = Date.now() + seconds * 1000
  for (;;) {
    let got
    try {
      got = (await db.query(text)).rows[0].v
    } catch (e) {
      // A replica that has not replayed the CREATE TABLE yet (42P01).
      if (e.code !== '42P01' || Date.now() > deadline) throw e
    }
    if (got === want || Date.now() > deadline) return got
    await sleep(50)
  }
}

// Expect a query to fail; returns the SQLSTATE (null when it did not fail).
async function sqlstate(db, query) {
  try {
    await db.query(query)
    return null
  } catch (e) {
    return e.code || e.message
  }
}

async function main() {
  const t0 = Date.now()
  const client = new pg.Client(CONF)
  await client.connect()
  client.on('error', fail)
  out.server_version = Number((await client.query('SHOW server_version_num')).rows[0].server_version_num)

  step = 'create_table'
  await client.query(`CREATE TABLE ${TABLE} (id int PRIMARY KEY, name text, flag bool, doc json, ts timestamptz, note text)`)

  step = 'param_types'
  const r = await client.query(
    `INSERT INTO ${TABLE} VALUES ($1, $2, $3, $4, $5, $6) RETURNING *, pg_is_in_recovery() AS rec`,
    [1, 'h\u00e9llo \u2603', true, { a: 1, b: [2, 3] }, TS, null])
  const row = r.rows[0]
  out.param_types_ok = row.id === 1 && row.name === 'h\u00e9llo \u2603' && row.flag === true &&
    JSON.stringify(row.doc) === '{"a":1,"b":[2,3]}' && row.ts instanceof Date &&
    row.ts.getTime() === TS.getTime() && row.note === null
  out.insert_on_primary = row.rec === false

  step = 'transaction'
  const ins = (id) => ({ name: 'ins_row', text: `INSERT INTO ${TABLE} (id, name, flag) VALUES ($1, $2, $3)`, values: [id, `row ${id}`, id % 2 === 0] })
  await client.query('BEGIN')
  for (let id = 2; id <= 20; id++) await client.query(ins(id))
  out.txn_on_primary = (await client.query('SELECT pg_is_in_recovery() AS rec')).rows[0].rec === false
  await client.query('COMMIT')
  await client.query(ins(21)) // the same named statement again, outside the transaction
  await client.query('BEGIN')
  await client.query(ins(22))
  await client.query('ROLLBACK')
  // On the primary: a replica may not have replayed the CREATE TABLE yet.
  out.rollback_rows = (await client.query({ text: `/* sy: route=primary */ SELECT count(*)::int AS v FROM ${TABLE} WHERE id = 22` })).rows[0].v

  step = 'pool_prepared'
  const pool = new pg.Pool({ ...CONF, max: 4 })
  pool.on('error', fail) // an idle pooled connection dropped by the server
  out.visible_rows = await poll(pool, `SELECT count(*)::int AS v FROM ${TABLE}`, 21)
  const getRow = (id) => ({ name: 'get_row', text: `SELECT id, name, pg_is_in_recovery() AS rec FROM ${TABLE} WHERE id = $1`, values: [id] })
  let execs = 0; let correct = 0; let replica = 0
  const worker = async (w) => {
    const c = await pool.connect()
    try {
      for (let i = 0; i < 10; i++) {
        const id = 1 + ((w * 10 + i) % 21)
        const res = await c.query(getRow(id))
        execs++
        if (res.rows.length === 1 && res.rows[0].id === id) correct++
        if (res.rows.length === 1 && res.rows[0].rec) replica++
      }
    } finally { c.release() }
  }
  await Promise.all([0, 1, 2, 3].map(worker))
  // Then through pool.query: whichever idle client, each already holding get_row.
  await Promise.all(Array.from({ length: 20 }, async (_, i) => {
    const res = await pool.query(getRow(1 + i))
    execs++
    if (res.rows.length === 1 && res.rows[0].id === 1 + i) correct++
    if (res.rows.length === 1 && res.rows[0].rec) replica++
  }))
  out.prepared_execs = execs
  out.prepared_correct = correct
  out.prepared_replica = replica
  out.pool_clients = pool.totalCount

  step = 'reads'
  let reads = 0; let primary = 0; const ports = new Set()
  for (let i = 0; i < 10; i++) {
    const res = (await pool.query('SELECT pg_is_in_recovery() AS rec, inet_server_port() AS port')).rows[0]
    if (res.rec) reads++; else primary++
    ports.add(res.port)
  }
  out.replica_reads = reads
  out.primary_reads = primary
  out.read_ports = [...ports].sort((a, b) => a - b)

  step = 'paged_execute'
  // rows: N makes pg send Execute(max rows N) + Flush, and Sync only after CommandComplete.
  const paged = await client.query({ text: 'SELECT g FROM generate_series(1, 100) g', rows: 10 })
  out.paged_rows = paged.rows.length

  step = 'errors'
  out.error_sqlstate = await sqlstate(client, 'SELECT 1/0')
  out.prepared_error_sqlstate = await sqlstate(client, { name: 'div', text: 'SELECT 1/$1::int AS v', values: [0] })
  out.prepared_after_error = (await client.query({ name: 'div', text: 'SELECT 1/$1::int AS v', values: [1] })).rows[0].v
  out.after_error = (await client.query('SELECT 42 AS v')).rows[0].v
  await client.query('BEGIN')
  await sqlstate(client, 'SELECT 1/0')
  out.aborted_txn_sqlstate = await sqlstate(client, 'SELECT 1')
  await client.query('ROLLBACK')
  out.after_error_txn = (await client.query(getRow(1))).rows[0].id

  step = 'listen_notify'
  const listener = new pg.Client(CONF)
  listener.on('error', fail)
  await listener.connect()
  const got = new Promise((resolve) => {
    const timer = setTimeout(() => resolve(null), 5000)
    listener.on('notification', (msg) => { clearTimeout(timer); resolve(msg) })
  })
  await listener.query('LISTEN sy_clients_chan')
  await pool.query("SELECT pg_notify('sy_clients_chan', $1)", ['payload \u2603 42'])
  const msg = await got
  out.notify_received = msg !== null
  out.notify_channel = msg && msg.channel
  out.notify_payload = msg && msg.payload
  await listener.end()

  step = 'drop_table'
  await client.query(`DROP TABLE ${TABLE}`)
  out.dropped = true
  await pool.end()
  await client.end()
  out.elapsed_ms = Date.now() - t0
  out.ok = true
}

setTimeout(() => fail(new Error(`timeout: no result after ${TIMEOUT} s`)), TIMEOUT * 1000).unref()
main().then(() => finish(0), fail)

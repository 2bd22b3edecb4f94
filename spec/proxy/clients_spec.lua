-- Real clients through `switchyard -c` on one primary and two streaming
-- replicas with the built-in read/write split: psql, pgbench (simple,
-- extended and prepared), psycopg2, node-postgres and JDBC.  Where a read
-- ran is asked of PostgreSQL (pg_is_in_recovery(), inet_server_port()).
local cluster = require("support.cluster")
local proxy = require("support.proxy")
local cjson = require("cjson")

local quote = cluster.quote

describe("real clients through the proxy", function()
  local bed, px, c

  setup(function()
    bed = cluster.start({ clusters = { { name = "main", replicas = 2 } } })
    c = bed.clusters.main
    bed:wait_replicas_streaming("main")
    px = proxy.start(bed, { extra = "pool = { min = 1, max = 20 }," })
  end)

  teardown(function()
    if px then px.stop() end
    if bed then bed:teardown() end
  end)

  local function env() return px.env() end

  -- Node queries counted by the proxy, per node name.
  local function node_queries()
    local ok, out = px.admin("SHOW NODES")
    assert.is_true(ok, out)
    local q = {}
    for line in out:gmatch("[^\n]+") do
      local fields = {}
      for f in (line .. "|"):gmatch("([^|]*)|") do fields[#fields + 1] = f end
      q[fields[1]] = tonumber(fields[11]) -- the queries column of SHOW NODES
    end
    return q
  end

  local function run_client(cmd)
    local code, out, err = cluster.run(env() .. cmd)
    local ok, result = pcall(cjson.decode, out:match("({.*})%s*$") or "")
    assert.is_true(ok, "client printed no JSON (exit " .. tostring(code) .. "):\n" .. out .. err
      .. "\nproxy log:\n" .. px.log_text())
    assert.is_true(result.ok, "client failed: " .. out .. "\nproxy log:\n" .. px.log_text())
    return result
  end

  local function replica_port(port)
    for _, r in ipairs(c.replicas) do
      if r.port == tonumber(port) then return true end
    end
    return false
  end

  it("psql: reads on replicas, writes on the primary, \\d, \\copy both ways, LISTEN/NOTIFY", function()
    local ok, out = px.psql("SELECT pg_is_in_recovery()")
    assert.is_true(ok, out)
    assert.are.equal("t", out)
    ok, out = px.psql("CREATE TABLE psql_items (id int PRIMARY KEY, v text); " ..
      "INSERT INTO psql_items VALUES (1, 'one'), (2, 'two') RETURNING pg_is_in_recovery()")
    assert.is_true(ok, out)
    assert.are.equal("f\nf", out)
    bed:wait_replayed("main")
    ok, out = px.psql("\\d psql_items")
    assert.is_true(ok, out)
    assert.matches("id", out)
    assert.matches("integer", out)
    -- \copy in (a write: primary) and out (a read: replica)
    local csv = bed.dir .. "/in.csv"
    local f = assert(io.open(csv, "w"))
    for i = 3, 1002 do f:write(i, ",row ", i, "\n") end
    f:close()
    ok, out = px.psql("\\copy psql_items FROM " .. quote(csv) .. " WITH (FORMAT csv)")
    assert.is_true(ok, out)
    ok, out = px.psql("SELECT count(*) FROM psql_items /* sy: route=primary */")
    assert.is_true(ok, out)
    assert.are.equal("1002", out)
    bed:wait_replayed("main")
    local dump = bed.dir .. "/out.csv"
    ok, out = px.psql("\\copy (SELECT id, v FROM psql_items ORDER BY id) TO " .. quote(dump) .. " WITH (FORMAT csv)")
    assert.is_true(ok, out)
    local lines = 0
    for _ in io.lines(dump) do lines = lines + 1 end
    assert.are.equal(1002, lines)
    -- LISTEN pins the session to its backend; the NOTIFY from another
    -- client arrives on it.
    ok, out = px.psql("LISTEN sy_chan; SELECT pg_sleep(0.3); SELECT 1;", { timeout = 20 })
    assert.is_true(ok, out)
    local listener = "psql -X -d %s -c 'LISTEN sy_chan' -c 'SELECT pg_sleep(1.5)' -c 'SELECT 1'"
    local code, nout = cluster.run(("(%s " .. listener .. " 2>&1) & "
      .. "sleep 0.5; psql -X -d %s -c \"NOTIFY sy_chan, 'hello'\" >/dev/null; wait")
      :format(env(), quote(px.conninfo()), quote(px.conninfo())))
    assert.are.equal(0, code)
    assert.matches('Asynchronous notification "sy_chan" with payload "hello"', nout)
  end)

  it("pgbench in simple, extended and prepared modes: 16 clients, 10 s, zero errors, reads on replicas", function()
    assert.is_true(bed:psql(c.primary, "SELECT 1") ~= nil)
    local code, out = cluster.run(("pgbench -i -s 2 -q -h 127.0.0.1 -p %d -U postgres postgres 2>&1")
      :format(c.primary.port))
    assert.are.equal(0, code, out)
    bed:wait_replayed("main")
    for _, mode in ipairs({ "simple", "extended", "prepared" }) do
      local before = node_queries()
      code, out = cluster.run(("%s pgbench -n -S -M %s -c 16 -j 2 -T 10 2>&1"):format(env(), mode))
      assert.are.equal(0, code, out)
      local tx = tonumber(out:match("number of transactions actually processed: (%d+)"))
      local failed = tonumber(out:match("number of failed transactions: (%d+)"))
      assert.is_true(tx and tx > 1000, mode .. ": " .. out)
      assert.are.equal(0, failed, mode .. ": " .. out)
      assert.is_nil(out:match("ERROR"), out)
      local after = node_queries()
      local on_replicas = (after["main.replica1"] - before["main.replica1"]) +
        (after["main.replica2"] - before["main.replica2"])
      local on_primary = after["main.primary"] - before["main.primary"]
      assert.is_true(on_replicas >= tx, mode .. ": replicas ran " .. on_replicas .. " of " .. tx)
      assert.is_true(on_primary < tx / 100, mode .. ": primary ran " .. on_primary)
    end
    -- The read-write TPC-B script in prepared mode: writes and their
    -- transactions go to the primary, with no error.
    code, out = cluster.run(("%s pgbench -n -M prepared -c 8 -j 2 -T 5 2>&1"):format(env()))
    assert.are.equal(0, code, out)
    assert.are.equal("0", out:match("number of failed transactions: (%d+)"), out)
  end)

  it("psycopg2", function()
    local r = run_client("/usr/bin/python3 spec/clients/psycopg2_client.py py_items")
    assert.is_true(r.replica_reads > 0, cjson.encode(r))
    for _, p in ipairs(r.read_ports) do assert.is_true(replica_port(p), cjson.encode(r)) end
    assert.are.equal(3, r.primary_txns)
    assert.is_true(r.settings_persist, cjson.encode(r))
    assert.is_true(r.roundtrip_params and r.roundtrip_read and r.roundtrip_txn)
    assert.are.equal("22012", r.error_sqlstate)
    assert.are.equal(56, r.named_cursor_rows)
  end)

  it("node-postgres, named prepared statements from a pool", function()
    local r = run_client("node spec/clients/node_client.js node_items")
    assert.is_true(r.replica_reads > 0, cjson.encode(r))
    assert.are.equal(r.prepared_execs, r.prepared_correct)
    assert.is_true(r.prepared_replica > 0, cjson.encode(r))
    assert.is_true(r.notify_received, cjson.encode(r))
    assert.are.equal(100, r.paged_rows)
    assert.are.equal("22012", r.prepared_error_sqlstate)
  end)

  it("JDBC, server-side prepared statements and a fetch size inside a transaction", function()
    local r = run_client("java -cp /usr/share/java/postgresql.jar spec/clients/JdbcClient.java jdbc_items")
    assert.is_true(r.replica_reads > 0, cjson.encode(r))
    assert.is_true(r.prepared_replica > 0 and r.prepared_t1_replica > 0, cjson.encode(r))
    assert.are.equal(1000, r.fetch_rows)
    assert.is_true(r.fetch_sum_ok)
    assert.are.equal(1000, r.batch_inserted)
    assert.is_true(r.txn_on_primary)
  end)
end)

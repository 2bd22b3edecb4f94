-- Transaction pooling through `switchyard -c`: integrity under concurrency,
-- cancel, session state across backends, routing variables, pinning,
-- prepared-statement eviction, timeouts and limits.
local cluster = require("support.cluster")
local proxy = require("support.proxy")
local cjson = require("cjson")

local quote = cluster.quote

local function env(px) return px.env() end

local function probe(px, mode, arg)
  local code, out = cluster.run(env(px) .. "/usr/bin/python3 spec/clients/session_probe.py " .. mode
    .. (arg and (" " .. quote(arg)) or ""))
  local ok, r = pcall(cjson.decode, out:match("({.*})%s*$") or "")
  assert.is_true(ok and r.ok, "probe " .. mode .. " (exit " .. tostring(code) .. "): " .. out
    .. "\nproxy log:\n" .. px.log_text())
  return r
end

describe("transaction pooling", function()
  local bed, px, c

  setup(function()
    bed = cluster.start({ clusters = { { name = "main", replicas = 2 } } })
    c = bed.clusters.main
    bed:psql(c.primary, [[
      CREATE TABLE accounts (id int PRIMARY KEY, balance bigint NOT NULL);
      INSERT INTO accounts SELECT g, 1000 FROM generate_series(1, 100) g;
      CREATE TABLE tx_log (txid bigint, pid int, step int);
      CREATE TABLE held (v text);
    ]])
    bed:wait_replicas_streaming("main")
    -- As many backends as pgbench clients: pgbench -M prepared prepares
    -- each statement synchronously, so one thread's clients would wait on
    -- each other for a backend a waiting client's own thread holds.
    px = proxy.start(bed, {
      extra = "pool = { min = 1, max = 16 },",
      proxy = "prepared_statements = { max_per_backend = 2 }",
    })
  end)

  teardown(function()
    if px then px.stop() end
    if bed then bed:teardown() end
  end)

  it("keeps the total exact over 10,000 transfers from 16 clients, each transaction on one backend", function()
    local script = bed.dir .. "/transfer.sql"
    local f = assert(io.open(script, "w"))
    f:write([[
\set a random(1, 100)
\set b (:a % 100) + 1
\set amt random(1, 50)
BEGIN;
INSERT INTO tx_log VALUES (txid_current(), pg_backend_pid(), 1);
UPDATE accounts SET balance = balance + (CASE WHEN id = :a THEN -1 ELSE 1 END) * :amt::bigint
  WHERE id IN (:a, :b);
INSERT INTO tx_log VALUES (txid_current(), pg_backend_pid(), 2);
COMMIT;
]])
    f:close()
    os.execute("chmod 644 " .. quote(script))
    -- Two transfers may deadlock on their row locks; PostgreSQL aborts one
    -- and pgbench runs it again (--max-tries), as an application would.
    local code, out = cluster.run(("%s pgbench -n -M prepared -c 16 -j 2 -t 625 --max-tries=20 -f %s 2>&1")
      :format(env(px), quote(script)))
    assert.are.equal(0, code, out)
    assert.are.equal("10000", out:match("number of transactions actually processed: (%d+)"), out)
    assert.are.equal("0", out:match("number of failed transactions: (%d+)"), out)
    assert.are.equal("100000", bed:psql(c.primary, "SELECT sum(balance) FROM accounts"))
    assert.are.equal("10000", bed:psql(c.primary, "SELECT count(DISTINCT txid) FROM tx_log"))
    -- A transaction split over backends would show as two txids of one row each.
    assert.are.equal("0", bed:psql(c.primary, [[
      SELECT count(*) FROM (SELECT txid FROM tx_log GROUP BY txid
        HAVING count(*) <> 2 OR count(DISTINCT pid) <> 1) odd]]))
  end)

  it("cancels a running pg_sleep(30) from the client and keeps the connection usable", function()
    local r = probe(px, "cancel")
    assert.are.equal("57014", r.sqlstate, cjson.encode(r))
    assert.matches("canceling statement due to user request", r.message)
    -- Seconds, not the 30 the query asked for (the issue's figure is "under
    -- a second"; the bound here only proves the cancel did it).
    assert.is_true(r.seconds_after_cancel < 5, cjson.encode(r))
    print(("\n    cancel returned %.3f s after the request"):format(r.seconds_after_cancel))
    assert.are.equal(42, r.after)
  end)

  it("applies SET values on whichever backend serves the next transaction", function()
    local ok, out = px.psql([[
      SET search_path TO "$user", pg_catalog, public;
      SET TimeZone = 'Asia/Tokyo';
      SET application_name = 'pooled';
      SELECT current_setting('TimeZone'), current_setting('search_path'), current_setting('application_name');
      BEGIN; SELECT current_setting('TimeZone'), current_setting('application_name'); COMMIT;
      RESET TimeZone;
      SELECT current_setting('TimeZone') <> 'Asia/Tokyo';
    ]])
    assert.is_true(ok, out)
    local lines = {}
    for l in out:gmatch("[^\n]+") do lines[#lines + 1] = l end
    assert.are.equal('Asia/Tokyo|"$user", pg_catalog, public|pooled', lines[1])
    assert.are.equal("Asia/Tokyo|pooled", lines[2])
    assert.are.equal("t", lines[3])
    -- Forty reads spread over both replicas all see the session's values.
    local sql = { "SET TimeZone = 'America/Lima';" }
    for _ = 1, 40 do
      sql[#sql + 1] = "SELECT current_setting('TimeZone') || ' ' || inet_server_port();"
    end
    ok, out = px.psql(table.concat(sql, "\n"))
    assert.is_true(ok, out)
    local ports = {}
    for tz, port in out:gmatch("(%S+) (%d+)") do
      assert.are.equal("America/Lima", tz)
      ports[port] = true
    end
    assert.is_true(ports[tostring(c.replicas[1].port)] and ports[tostring(c.replicas[2].port)], out)
  end)

  it("pins a client that LISTENs and counts it; keeps unpinned clients moving", function()
    local ok, out = px.psql("LISTEN some_channel; SELECT 1; SELECT 2;")
    assert.is_true(ok, out)
    local _, stats = px.admin("SHOW STATS")
    assert.is_true(tonumber(stats:match("pins|(%d+)")) >= 1, stats)
  end)

  it("evicts prepared statements beyond max_per_backend and still answers every query", function()
    local script = bed.dir .. "/four.sql"
    local f = assert(io.open(script, "w"))
    f:write("SELECT 1 + :client_id;\nSELECT 2 + :client_id;\nSELECT 3 + :client_id;\nSELECT 4 + :client_id;\n")
    f:close()
    os.execute("chmod 644 " .. quote(script))
    local code, out = cluster.run(("%s pgbench -n -M prepared -c 4 -j 2 -t 200 -f %s 2>&1"):format(env(px),
      quote(script)))
    assert.are.equal(0, code, out)
    assert.are.equal("0", out:match("number of failed transactions: (%d+)"), out)
    local _, stats = px.admin("SHOW STATS")
    assert.is_true(tonumber(stats:match("statement_evictions|(%d+)")) > 0, stats)
  end)

  it("DEALLOCATE and DISCARD ALL are answered by the proxy", function()
    local ok, out = px.psql("PREPARE x AS SELECT 1; EXECUTE x; DEALLOCATE x; DISCARD ALL; SELECT 5;")
    assert.is_true(ok, out)
    assert.are.equal("1\n5", out)
  end)

  it("admin console: SHOW commands, DRAIN and ENABLE a node, RELOAD", function()
    for _, what in ipairs({ "NODES", "POOLS", "CLIENTS", "STATS", "CONFIG", "HELP" }) do
      local ok, out = px.admin("SHOW " .. what)
      assert.is_true(ok, out)
      assert.is_true(#out > 0, what)
    end
    local ok, out = px.admin("DRAIN main.replica1")
    assert.is_true(ok, out)
    local sql = {}
    for _ = 1, 20 do sql[#sql + 1] = "SELECT inet_server_port();" end
    ok, out = px.psql(table.concat(sql, "\n"))
    assert.is_true(ok, out)
    for port in out:gmatch("%d+") do assert.are.equal(tostring(c.replicas[2].port), port) end
    ok, out = px.admin("ENABLE main.replica1")
    assert.is_true(ok, out)
    local _, spread = px.psql(table.concat(sql, "\n"))
    assert.matches(tostring(c.replicas[1].port), spread)
    ok, out = px.admin("RELOAD")
    assert.is_true(ok, out)
    local err
    ok, out, err = px.admin("DRAIN main.nosuch")
    assert.is_false(ok)
    assert.matches("no such node", out .. err)
  end)
end)

-- A bed with a table the probes write to.
local function held_bed(replicas)
  local bed = cluster.start({ clusters = { { name = "main", replicas = replicas } } })
  local c = bed.clusters.main
  bed:psql(c.primary, "CREATE TABLE held (v text)")
  bed:wait_replicas_streaming("main")
  return bed, c
end

describe("routing variables, limits and timeouts", function()
  local bed, c

  setup(function() bed, c = held_bed(2) end)
  teardown(function() if bed then bed:teardown() end end)

  it("SET switchyard.<name> reaches the policy as a session variable and never PostgreSQL", function()
    local policy = bed.dir .. "/vars_policy.lua"
    local f = assert(io.open(policy, "w"))
    f:write([[
local policy = {}
function policy.route(q)
  local target = q.session.vars.target
  if target then return { node = "main." .. target } end
  return { cluster = "main", role = "primary" }
end
return policy
]])
    f:close()
    local px = proxy.start(bed, { extra = ("policy = %q,"):format(policy) })
    local ok, out = px.psql([[
      SELECT inet_server_port();
      SET switchyard.target = 'replica2';
      SELECT inet_server_port();
      SET switchyard.target TO replica1;
      SELECT inet_server_port();
      RESET switchyard.target;
      SELECT inet_server_port();
      SELECT current_setting('switchyard.target', true) IS NULL;
    ]])
    px.stop()
    assert.is_true(ok, out)
    local ports = {}
    for l in out:gmatch("[^\n]+") do ports[#ports + 1] = l end
    assert.are.same({ tostring(c.primary.port), tostring(c.replicas[2].port), tostring(c.replicas[1].port),
      tostring(c.primary.port), "t" }, ports)
  end)

  it("session pooling keeps one backend for the whole session", function()
    local px = proxy.start(bed, { proxy = 'pool_mode = "session"' })
    local ok, out = px.psql([[
      SELECT pg_backend_pid() /* sy: route=primary */;
      SELECT pg_backend_pid() /* sy: route=primary */;
      SELECT pg_backend_pid();
      BEGIN; SELECT pg_backend_pid(); COMMIT;
    ]])
    px.stop()
    assert.is_true(ok, out)
    local pids = {}
    for pid in out:gmatch("%d+") do pids[#pids + 1] = pid end
    assert.are.equal(4, #pids)
    for i = 2, 4 do assert.are.equal(pids[1], pids[i]) end
  end)

  it("gives up a backend connect after timeouts.connect with 08006", function()
    -- The only node sits behind a relay that holds every byte for a minute:
    -- TCP connects, the startup never completes.
    local stall = bed:start_relay(c.primary, 60000)
    local stalled = { main = { primary = { name = "primary", conninfo = stall.conninfo }, replicas = {} } }
    local view = setmetatable({ clusters = stalled }, { __index = bed })
    local px = proxy.start(view, {
      extra = "pool = { min = 0, max = 2, connect_timeout = 30 },",
      proxy = "timeouts = { connect = 1, wait_backend = 10 }",
    })
    local t0 = cluster.now()
    local ok, out, err = px.psql("\\set VERBOSITY verbose\nSELECT 1;")
    local took = cluster.now() - t0
    px.stop()
    stall.stop()
    assert.is_false(ok, out)
    -- At login the proxy needs a server's parameters: the connect fails
    -- there (FATAL 08006; psql shows no SQLSTATE for login errors).
    assert.matches("could not reach node main%.primary to log in: connection timed out after 1", err)
    assert.is_true(took < 9, ("took %.1f s: the 1 s connect timeout did not fire"):format(took))
  end)

  it("refuses clients past max_clients with 53300", function()
    local px = proxy.start(bed, { proxy = "max_clients = 2" })
    local code, out = cluster.run(("(%s psql -X -c 'SELECT pg_sleep(2)' >/dev/null 2>&1 &"
      .. " %s psql -X -c 'SELECT pg_sleep(2)' >/dev/null 2>&1 & sleep 0.7; %s psql -X -c 'SELECT 1' 2>&1; wait)")
      :format(env(px), env(px), env(px)))
    px.stop()
    assert.are.equal(0, code)
    assert.matches("too many clients", out)
  end)

  it("times out an idle client, an idle transaction and a wait for a backend", function()
    local px = proxy.start(bed, {
      extra = "pool = { min = 0, max = 1 },",
      proxy = "timeouts = { client_idle = 1, idle_in_transaction = 1, wait_backend = 1 }",
    })
    -- idle in transaction: disconnected with 25P03
    local ok, out, err = px.psql("BEGIN; SELECT 1; SELECT pg_sleep(0); \\! sleep 2\nSELECT 2;")
    assert.is_false(ok)
    assert.matches("idle%-in%-transaction timeout", out .. err)
    -- waiting for the only backend, held by another client's transaction
    local holder = "psql -X -c 'BEGIN' -c 'SELECT pg_sleep(1.8)' -c 'COMMIT' >/dev/null 2>&1"
    local code, wout = cluster.run(("(%s " .. holder .. " &"
      .. " sleep 0.4; %s psql -X -v VERBOSITY=verbose -c '/* sy: route=primary */ SELECT 1' 2>&1; wait)")
      :format(env(px), env(px)))
    assert.are.equal(0, code)
    assert.matches("53300", wout)
    -- idle client
    ok, out, err = px.psql("SELECT 1; \\! sleep 2\nSELECT 2;")
    assert.is_false(ok)
    assert.matches("idle timeout", out .. err)
    px.stop()
  end)
end)

describe("signals", function()
  local bed, c

  setup(function() bed, c = held_bed(1) end)
  teardown(function() if bed then bed:teardown() end end)

  local function hold(px)
    local dir = bed.dir .. "/hold" .. math.random(1e6)
    os.execute("mkdir -p " .. quote(dir) .. " && chmod 777 " .. quote(dir))
    local out = dir .. "/out.json"
    os.execute(env(px) .. "/usr/bin/python3 spec/clients/session_probe.py hold_tx " .. quote(dir)
      .. " >" .. quote(out) .. " 2>&1 &")
    cluster.wait_for(function() return io.open(dir .. "/ready") ~= nil end, 10, "the transaction to open")
    return dir, out
  end

  local function finish(dir, out)
    os.execute("touch " .. quote(dir .. "/go"))
    local text
    cluster.wait_for(function()
      text = cluster.read_file(out)
      return text and text:match("}%s*$")
    end, 15, "the probe to finish")
    return cjson.decode(text:match("({.*})"))
  end

  it("SIGHUP reloads without dropping a client in a transaction", function()
    local px = proxy.start(bed)
    local dir, out = hold(px)
    os.execute("kill -HUP " .. px.pid)
    cluster.sleep(0.5)
    local r = finish(dir, out)
    assert.is_true(r.ok and r.same_backend and r.committed, cjson.encode(r))
    assert.are.equal("open", r.after_commit)
    local ok = px.psql("SELECT 1")
    assert.is_true(ok)
    px.stop()
  end)

  it("SIGTERM stops accepting and lets an open transaction commit, then exits", function()
    local px = proxy.start(bed)
    local before = tonumber(bed:psql(c.primary, "SELECT count(*) FROM held"))
    local dir, out = hold(px)
    os.execute("kill -TERM " .. px.pid)
    cluster.sleep(0.3)
    local ok = px.psql("SELECT 1")
    assert.is_false(ok)
    local r = finish(dir, out)
    assert.is_true(r.ok and r.same_backend and r.committed, cjson.encode(r))
    assert.are_not.equal("open", r.after_commit)
    cluster.wait_for(function() return not cluster.pid_alive(px.pid) end, 10, "the proxy to exit")
    assert.are.equal(tostring(before + 1), bed:psql(c.primary, "SELECT count(*) FROM held"))
  end)

  it("SIGINT stops at once", function()
    local px = proxy.start(bed)
    local dir, out = hold(px)
    os.execute("kill -INT " .. px.pid)
    cluster.wait_for(function() return not cluster.pid_alive(px.pid) end, 5, "the proxy to exit")
    local r = finish(dir, out)
    assert.is_false(r.ok)
  end)
end)

-- Session state and pipelines through transaction pooling, where a pooled
-- backend must never carry one client's unfinished work or settings to
-- another: pipelines left without Sync, SETs in transactions that roll
-- back, pipelined SETs, COPY over the extended protocol, parameter names
-- that are not names, DEALLOCATE ALL on a pinned client, a reload that
-- drops the node a transaction runs on.  Raw protocol via raw_wire.py.
local cluster = require("support.cluster")
local proxy = require("support.proxy")
local cjson = require("cjson")

local quote = cluster.quote

local function hex(s)
  return (s:gsub(".", function(ch) return ("%02x"):format(ch:byte()) end))
end

-- Message bodies (hex) for the extended protocol, no parameters.
local function parse(name, sql) return { msg = "P", body_hex = hex(name .. "\0" .. sql .. "\0\0\0") } end
local function bind(portal, stmt) return { msg = "B", body_hex = hex(portal .. "\0" .. stmt .. "\0\0\0\0\0\0\0") } end
local function execute(portal) return { msg = "E", body_hex = hex(portal .. "\0\0\0\0\0") } end
local function query(sql) return { msg = "Q", text = sql } end
local LOGIN = { login = { user = "postgres", database = "postgres" }, timeout = 5 }

describe("session state through transaction pooling", function()
  local bed, px, c

  setup(function()
    bed = cluster.start({ clusters = { { name = "main", replicas = 0 } } })
    c = bed.clusters.main
    bed:psql(c.primary, "CREATE TABLE t1 (v int); CREATE TABLE victim (v int); CREATE TABLE copied (v int)")
    -- One backend: whatever one client leaves on it, the next one meets.
    px = proxy.start(bed, { extra = "pool = { min = 1, max = 1 }," })
  end)

  teardown(function()
    if px then px.stop() end
    if bed then bed:teardown() end
  end)

  -- Runs connections (name -> steps) at once; results by name.
  local function wire_all(conns)
    local list = {}
    for name, steps in pairs(conns) do list[#list + 1] = { name = name, steps = steps } end
    local script = bed.dir .. "/wire" .. math.random(1e9) .. ".json"
    local f = assert(io.open(script, "w"))
    f:write(cjson.encode({ host = "127.0.0.1", port = px.port, connections = list }))
    f:close()
    local code, out = cluster.run("timeout 30 /usr/bin/python3 spec/clients/raw_wire.py " .. quote(script))
    assert.are.equal(0, code, out)
    local by = {}
    for _, r in ipairs(cjson.decode(out).results) do by[r.name] = r end
    return by
  end

  local function wire(steps) return wire_all({ one = steps }).one end

  -- A second client that needs the only backend while "first" holds its
  -- connection open: it gets it only if the first client released it.
  local function next_client_steps()
    return { { wait = "first_done", timeout = 10 }, LOGIN,
      query("SELECT 'free' /* sy: route=primary */"), { read = { timeout = 3, ["until"] = "Z" } },
      { signal = "second_done" } }
  end

  local function psql1(sql)
    local ok, out, err = px.psql(sql)
    assert.is_true(ok, tostring(err) .. px.log_text())
    return out
  end

  it("a client that leaves a pipeline without Sync leaves nothing committed", function()
    local r = wire({ LOGIN, parse("", "INSERT INTO t1 VALUES (1)"), bind("", ""), execute(""), { msg = "H" },
      { read = { timeout = 3, ["until"] = "C" } } })
    assert.are.same({ "INSERT 0 1" }, r.commands)
    -- the connection closed here without Sync: the implicit transaction
    -- must be rolled back, not committed by the next client's statement
    assert.are.equal("0", psql1("SELECT count(*) FROM t1 /* sy: route=primary */"))
    assert.are.equal("0", bed:psql(c.primary, "SELECT count(*) FROM t1"))
  end)

  it("a SET inside a transaction that rolls back is not kept; one that commits is", function()
    -- Between the ROLLBACK and the SELECT another client uses the only
    -- backend, so the first client's settings are replayed for the SELECT.
    local rs = wire_all({
      first = { LOGIN, query("BEGIN"), { read = { timeout = 3, ["until"] = "Z" } },
        query("SET statement_timeout TO '1234ms'"), { read = { timeout = 3, ["until"] = "Z" } },
        query("ROLLBACK"), { read = { timeout = 3, ["until"] = "Z" } },
        { signal = "first_done" }, { wait = "second_done", timeout = 10 },
        query("SELECT current_setting('statement_timeout')"), { read = { timeout = 3, ["until"] = "Z" } } },
      second = { { wait = "first_done", timeout = 10 }, LOGIN,
        query("SET statement_timeout TO '99s'"), { read = { timeout = 3, ["until"] = "Z" } },
        { signal = "second_done" } },
    })
    assert.are.same({}, rs.first.errors)
    assert.are.equal("0", rs.first.rows[1] and rs.first.rows[1][1])
    assert.are.equal("1234", psql1([[
      BEGIN; SET statement_timeout TO '1234ms'; COMMIT;
      SELECT setting FROM pg_settings WHERE name = 'statement_timeout';
    ]]))
    -- and a fresh client does not inherit it from the shared backend
    assert.are.equal("0", psql1("SELECT setting FROM pg_settings WHERE name = 'statement_timeout'"))
  end)

  it("tracks every SET of a pipeline, and leaks none to the next client", function()
    local r = wire({ LOGIN,
      parse("", "SET statement_timeout = '7s'"), bind("", ""), execute(""),
      parse("", "SET lock_timeout = '3s'"), bind("", ""), execute(""),
      { msg = "S" }, { read = { timeout = 3, ["until"] = "Z" } },
      query("SELECT current_setting('statement_timeout') || ' ' || current_setting('lock_timeout')"),
      { read = { timeout = 3, ["until"] = "Z" } } })
    assert.are.same({ "7s 3s" }, r.rows[1] and { r.rows[1][1] } or r.rows)
    local both = "SELECT current_setting('statement_timeout') || ' ' || current_setting('lock_timeout')"
    assert.are.equal("0 0", psql1(both))
  end)

  it("COPY FROM STDIN over the extended protocol completes and frees the backend", function()
    local copydata = { msg = "d", body_hex = hex("1\n2\n3\n") }
    local rs = wire_all({
      first = { LOGIN,
        parse("", "COPY copied FROM STDIN"), bind("", ""), execute(""), { msg = "S" },
        { read = { timeout = 3, ["until"] = "G" } },
        copydata, { msg = "c" }, { msg = "S" },
        { read = { timeout = 3, ["until"] = "Z" } },
        query("SELECT count(*) FROM copied"), { read = { timeout = 3, ["until"] = "Z" } },
        { signal = "first_done" }, { wait = "second_done", timeout = 10 } },
      second = next_client_steps(),
    })
    assert.are.same({}, rs.first.errors)
    assert.matches("COPY 3", table.concat(rs.first.commands, ","))
    assert.are.same({ { "free" } }, rs.second.rows)
    assert.are.equal("3", psql1("SELECT count(*) FROM copied /* sy: route=primary */"))
  end)

  it("refuses startup parameter names that are not names, and runs nothing from them", function()
    local code, out = cluster.run(("PGOPTIONS=%s psql -X -d %s -c 'SELECT 1' 2>&1"):format(
      quote("-c a.b;drop/**/table/**/victim;select/**/1=v"), quote(px.conninfo())))
    assert.are_not.equal(0, code)
    assert.matches("unrecognized configuration parameter", out)
    assert.are.equal("1", psql1("SELECT 1"))
    assert.are.equal("0", bed:psql(c.primary, "SELECT count(*) FROM victim"))
  end)

  it("a pinned client's DEALLOCATE ALL drops the proxy's statements too", function()
    local r = wire({ LOGIN, query("LISTEN pinned_here"), { read = { timeout = 3, ["until"] = "Z" } },
      parse("s1", "SELECT 41 + 1"), bind("", "s1"), execute(""), { msg = "S" },
      { read = { timeout = 3, ["until"] = "Z" } },
      query("DEALLOCATE ALL"), { read = { timeout = 3, ["until"] = "Z" } },
      parse("s1", "SELECT 41 + 1"), bind("", "s1"), execute(""), { msg = "S" },
      { read = { timeout = 3, ["until"] = "Z" } } })
    assert.are.same({}, r.errors)
    assert.are.equal(2, #r.rows)
  end)
end)

describe("a reload that drops the node a transaction runs on", function()
  it("lets the transaction end and the proxy live on", function()
    local bed = cluster.start({ clusters = { { name = "main", replicas = 0 } } })
    local ok, err = pcall(function()
      local c = bed.clusters.main
      bed:psql(c.primary, "CREATE TABLE r (v int)")
      local px = proxy.start(bed)
      local dir = bed.dir .. "/hold"
      os.execute("mkdir -p " .. quote(dir) .. " && chmod 777 " .. quote(dir))
      bed:psql(c.primary, "CREATE TABLE held (v text)")
      local env = px.env()
      local out = dir .. "/out.json"
      os.execute(env .. "/usr/bin/python3 spec/clients/session_probe.py hold_tx " .. quote(dir)
        .. " >" .. quote(out) .. " 2>&1 &")
      cluster.wait_for(function() return io.open(dir .. "/ready") ~= nil end, 10, "the transaction")
      -- Same node name, new conninfo: the old node leaves the topology.
      local f = assert(io.open(px.config, "r"))
      local text = f:read("*a")
      f:close()
      text = text:gsub("dbname=postgres", "dbname=postgres application_name=rotated", 1)
      f = assert(io.open(px.config, "w"))
      f:write(text)
      f:close()
      os.execute("kill -HUP " .. px.pid)
      cluster.sleep(0.5)
      os.execute("touch " .. quote(dir .. "/go"))
      local res
      cluster.wait_for(function()
        res = cluster.read_file(out)
        return res and res:match("}%s*$")
      end, 15, "the probe")
      local r = cjson.decode(res:match("({.*})"))
      assert.is_true(r.ok and r.committed, res .. px.log_text())
      assert.is_true(cluster.pid_alive(px.pid), px.log_text())
      local ok2, out2 = px.psql("SELECT current_setting('application_name')")
      assert.is_true(ok2, out2)
      px.stop()
    end)
    bed:teardown()
    assert.is_true(ok, tostring(err))
  end)
end)

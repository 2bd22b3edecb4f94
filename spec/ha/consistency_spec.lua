-- Consistency levels for reads (policies/lib/split.lua) on a cluster whose
-- second replica replays 500 ms late (recovery_min_apply_delay): bounded
-- reads never reach it, eventual reads there are stale (which proves the
-- delay works), strong reads go to the primary and are never stale.  The
-- level comes from a hint, a session variable (embedded and through the
-- proxy) or the policy option.
local cluster = require("support.cluster")
local E = require("support.engine")
local proxy = require("support.proxy")

local HEALTH = "health = { interval = 0.1, timeout = 1, fall = 3, rise = 1 },"
local WHO = "SELECT inet_server_port()"

describe("consistency levels", function()
  local bed, c, ports, eng

  setup(function()
    bed = cluster.start({ clusters = { { name = "main", replicas = 2,
      replica_settings = { [2] = { recovery_min_apply_delay = "500ms" } } } } })
    c = bed.clusters.main
    ports = E.port_names(bed, "main.")
    bed:psql(c.primary, "CREATE TABLE cons_items (id serial PRIMARY KEY, marker text)")
    bed:wait_replicas_streaming("main")
    bed:wait_replayed("main")
    eng = assert(E.new(E.write_config(bed, { extra = HEALTH })))
  end)

  teardown(function()
    if eng then eng:close() end
    if bed then bed:teardown() end
  end)

  local INSERT = "INSERT INTO cons_items (marker) VALUES ($1)"

  -- Writes until polling sees the delayed replica behind by more than ms.
  local function lag_delayed_replica(ms)
    local i = 0
    assert.is_true(eng:run_until(function()
      i = i + 1
      assert.is_true(eng:query(INSERT, { "warm" .. i }).ok)
      local lag = eng:node_stats()["main.replica2"].lag_ms
      return lag and lag > ms
    end, 20), "main.replica2 never fell behind")
  end

  -- n rounds of a write and a read at once; returns the servers of reads.
  local function mixed(n, read_sql, session)
    local replies = eng:query_many(2 * n, 4, function(i)
      if i % 2 == 1 then return INSERT, { "mix" .. i } end
      return read_sql
    end, session)
    local served = {}
    for i = 2, #replies, 2 do
      local r = replies[i]
      assert.is_true(r.ok, r.message)
      local who = ports[r.value]
      served[who] = (served[who] or 0) + 1
    end
    return served
  end

  it("bounded reads never reach a replica past the bound", function()
    lag_delayed_replica(200)
    local served = mixed(200, "/* sy: consistency=bounded max_lag_ms=100 */ " .. WHO)
    assert.is_nil(served["main.replica2"])
    assert.is_true((served["main.replica1"] or 0) > 0)
    assert.is_true(eng:node_stats()["main.replica2"].lag_ms > 100)
  end)

  -- A row written, then read at once in the same session: stale when the
  -- read missed it.
  local function stale_reads(rounds, read_sql, session)
    local stale, where = 0, {}
    for i = 1, rounds do
      local marker = ("ryw-%s-%d"):format(tostring(session), i)
      assert.is_true(eng:query(INSERT, { marker }, session).ok)
      local r = eng:query(read_sql, { marker }, session)
      assert.is_true(r.ok, r.message)
      local count, port = r.value:match("^(%d+) (%d+)$")
      if count == "0" then stale = stale + 1 end
      where[ports[port]] = true
    end
    return stale, where
  end

  local READ = "SELECT count(*) || ' ' || inet_server_port() FROM cons_items WHERE marker = $1"

  it("eventual reads go to the late replica and are stale there", function()
    local stale, where = stale_reads(20, "/* sy: consistency=eventual */ " .. READ)
    assert.is_true(stale > 0)
    assert.is_true(where["main.replica2"])
  end)

  it("strong reads, from a hint or a session variable, are the primary's", function()
    local stale, where = stale_reads(20, "/* sy: consistency=strong */ " .. READ)
    assert.are.equal(0, stale)
    assert.same({ ["main.primary"] = true }, where)
    local s = eng:session("app", "postgres", "consistency")
    assert.are.equal(0, E.lib.sy_session_set(s, "consistency", "strong"))
    stale, where = stale_reads(20, READ, s)
    assert.are.equal(0, stale)
    assert.same({ ["main.primary"] = true }, where)
    -- A hint outranks the session's level.
    local r = eng:query("/* sy: consistency=bounded max_lag_ms=100 */ " .. WHO, nil, s)
    assert.is_true(r.ok, r.message)
    assert.matches("^main%.replica", ports[r.value])
  end)

  it("read_your_writes: 1,000 rounds of write then read in a session are never stale", function()
    local s = eng:session("app", "postgres", "ryw")
    assert.are.equal(0, E.lib.sy_session_set(s, "consistency", "read_your_writes"))
    local stale, where = stale_reads(1000, READ, s)
    assert.are.equal(0, stale)
    assert.is_nil(where["main.replica2"])
    -- The same rounds read eventually are stale (the delay is real): above.
    -- Once a poll has bounded the write and a replica replayed past it,
    -- the session's reads go to that replica, still never stale.
    local marker = "ryw-settled"
    assert.is_true(eng:query(INSERT, { marker }, s).ok)
    local replica_reads = 0
    assert.is_true(eng:run_until(function()
      local r = eng:query(READ, { marker }, s)
      assert.is_true(r.ok, r.message)
      local count, port = r.value:match("^(%d+) (%d+)$")
      assert.are.equal("1", count)
      if ports[port] ~= "main.primary" then replica_reads = replica_reads + 1 end
      return replica_reads >= 10
    end, 10), "read_your_writes never used a replica")
  end)

  it("read_your_writes through the proxy: every read sees the write before it", function()
    local px = proxy.start(bed, { extra = HEALTH })
    local lines = { "SET switchyard.consistency = 'read_your_writes';" }
    for i = 1, 100 do
      lines[#lines + 1] = ("INSERT INTO cons_items (marker) VALUES ('px-%d');"):format(i)
      lines[#lines + 1] = ("SELECT count(*) FROM cons_items WHERE marker = 'px-%d';"):format(i)
    end
    local ok, out, err = px.psql(table.concat(lines, "\n"))
    px.stop()
    assert.is_true(ok, err)
    local n = 0
    for v in out:gmatch("[^\n]+") do
      n = n + 1
      assert.are.equal("1", v)
    end
    assert.are.equal(100, n)
  end)

  it("refuses an unknown level with 22023", function()
    local r = eng:query("/* sy: consistency=whenever */ " .. WHO)
    assert.is_false(r.ok)
    assert.are.equal("22023", r.sqlstate)
    assert.matches('unknown consistency level "whenever"', r.message)
  end)

  it("takes the level from SET switchyard.consistency through the proxy", function()
    local px = proxy.start(bed, { extra = HEALTH })
    local ok, out, err = px.psql("SET switchyard.consistency = 'strong';\n" .. WHO .. ";\n" .. WHO)
    assert.is_true(ok, err)
    for port in out:gmatch("%d+") do assert.are.equal("main.primary", ports[port]) end
    local _
    ok, _, err = px.psql("SET switchyard.consistency = 'sometime';\n" .. WHO)
    assert.is_false(ok)
    assert.matches("unknown consistency level", err)
    px.stop()
  end)
end)

-- Faults the health poller meets, each reported with its reason and held
-- to the thresholds, none blocking the loop (a healthy node keeps
-- answering queries meanwhile): a node that answers slowly (within the
-- poll timeout: up, with its round trip measured; beyond it: down, "no
-- answer within"), a node whose credentials are wrong (down, with the
-- server's error), a node that accepts TCP and never answers (down by the
-- poll deadline).  Names that do not resolve are in
-- spec/integration/dns_spec.lua.
local cluster = require("support.cluster")
local E = require("support.engine")

describe("health polling faults", function()
  local bed, c, eng

  setup(function()
    bed = cluster.start({ clusters = { { name = "main", replicas = 1 } } })
    c = bed.clusters.main
  end)

  teardown(function()
    if eng then eng:close() end
    if bed then bed:teardown() end
  end)

  after_each(function()
    if eng then eng:close() end
    eng = nil
  end)

  -- The primary as it is, plus one replica entry reached through conninfo.
  local function start(conninfo, health)
    local view = { clusters = { main = {
      primary = c.primary,
      replicas = { { name = "replica1", conninfo = conninfo } },
    } } }
    eng = assert(E.new(E.write_config(view, { extra = health .. " pool = { min = 0, max = 4 }," })))
    return eng
  end

  local function down_event(e)
    for _, ev in ipairs(e:events_of("node_down")) do
      if ev.node == "main.replica1" then return ev end
    end
  end

  -- The primary answers while the replica's poller struggles.
  local function primary_answers(e)
    for _ = 1, 5 do
      local r = e:query("SELECT 1 /* sy: route=primary */")
      assert.is_true(r.ok, r.message)
    end
  end

  it("keeps a slow node that answers within the timeout up, with its round trip", function()
    local slow = bed:start_relay(c.replicas[1], 150)
    local e = start(slow.conninfo, "health = { interval = 0.2, timeout = 2, fall = 2, rise = 1 },")
    assert.is_true(e:run_until(function() return e:node_stats()["main.replica1"].polls_ok >= 3 end, 20))
    primary_answers(e)
    local st = e:node_stats()["main.replica1"]
    assert.is_true(st.healthy)
    assert.is_true(st.rtt_ms >= 250, "rtt " .. st.rtt_ms) -- 150 ms each way
    assert.is_nil(down_event(e))
    slow.stop()
  end)

  it("marks a node that answers slower than the timeout down, saying so", function()
    local slow = bed:start_relay(c.replicas[1], 400)
    local e = start(slow.conninfo, "health = { interval = 0.2, timeout = 0.3, fall = 2, rise = 1 },")
    assert.is_true(e:run_until(function() return down_event(e) ~= nil end, 20), e:event_log())
    primary_answers(e)
    assert.matches("2 health checks failed: no answer within 0.3 s", down_event(e).message, 1, true)
    slow.stop()
  end)

  it("marks a node with wrong credentials down with the server's reason", function()
    local ci = ("host=127.0.0.1 port=%d dbname=postgres user=no_such_role"):format(c.replicas[1].port)
    local e = start(ci, "health = { interval = 0.2, timeout = 1, fall = 2, rise = 1 },")
    assert.is_true(e:run_until(function() return down_event(e) ~= nil end, 20), e:event_log())
    primary_answers(e)
    assert.matches('role "no_such_role" does not exist', down_event(e).message, 1, true)
    assert.matches('role "no_such_role" does not exist', e:node_stats()["main.replica1"].last_error, 1, true)
  end)

  it("marks a node that accepts TCP and never answers down by the poll deadline", function()
    local silent = bed:start_relay(c.replicas[1], 600000)
    local e = start(silent.conninfo, "health = { interval = 0.2, timeout = 0.5, fall = 2, rise = 1 },")
    assert.is_true(e:run_until(function() return down_event(e) ~= nil end, 20), e:event_log())
    primary_answers(e)
    assert.matches("no answer within 0.5 s", down_event(e).message, 1, true)
    silent.stop()
  end)
  it("lifts the fence and fails writes at once when the promotion itself fails", function()
    -- The replica is reached as a role that may poll but not promote.
    bed:psql(c.primary, "CREATE ROLE sy_monitor LOGIN; GRANT pg_monitor TO sy_monitor")
    bed:wait_replayed("main")
    local ci = ("host=127.0.0.1 port=%d dbname=postgres user=sy_monitor"):format(c.replicas[1].port)
    local view = { clusters = { main = { primary = c.primary,
      replicas = { { name = "replica1", conninfo = ci } } } } }
    eng = assert(E.new(E.write_config(view, {
      cluster_extra = [[ failover = { mode = "managed", write_wait = 30 } ]],
      extra = "health = { interval = 0.2, timeout = 1, fall = 2, rise = 1 },",
    })))
    local e = eng
    assert.is_true(e:wait_polled())
    bed:kill_node(c.primary)
    assert.is_true(e:run_until(function() return #e:events_of("failover_failed") > 0 end, 20), e:event_log())
    local failed = e:events_of("failover_failed")[1].message
    assert.matches("promoting main.replica1 failed", failed, 1, true)
    assert.matches("permission denied", failed, 1, true)
    assert.is_false(e:node_stats()["main.primary"].fenced)
    -- Refused as "down" by the policy, not after waiting for a failover.
    local w = e:query("CREATE TABLE never_made (id int)")
    assert.is_false(w.ok)
    assert.are.equal("08006", w.sqlstate)
    assert.matches("is down", w.message, 1, true)
    e:close()
    eng = nil
    bed:start_node(c.primary)
    bed:wait_replicas_streaming("main")
  end)

  it("fails writes at once when a managed failover has no replica to promote", function()
    -- Runs last: it kills the primary.  The replica has priority 0.
    local view = { clusters = { main = { primary = c.primary, replicas = { c.replicas[1] } } } }
    eng = assert(E.new(E.write_config(view, {
      cluster_extra = [[ failover = { mode = "managed", write_wait = 30 } ]],
      replica_extra = ", priority = 0",
      extra = "health = { interval = 0.2, timeout = 1, fall = 2, rise = 1 },",
    })))
    local e = eng
    assert.is_true(e:wait_polled())
    bed:kill_node(c.primary)
    assert.is_true(e:run_until(function() return #e:events_of("failover_failed") > 0 end, 20), e:event_log())
    assert.matches("no healthy replica with priority > 0", e:events_of("failover_failed")[1].message, 1, true)
    -- Refused as "down" by the policy, not after waiting for a failover.
    local w = e:query("CREATE TABLE never_made (id int)")
    assert.is_false(w.ok)
    assert.are.equal("08006", w.sqlstate)
    assert.matches("is down", w.message, 1, true)
    assert.is_false(e:node_stats()["main.primary"].fenced)
  end)
end)

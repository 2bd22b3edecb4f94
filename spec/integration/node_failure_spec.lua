-- Nodes failing under the engine: a replica stopped in the middle of a
-- stream of reads, the primary stopped under a write, a node that never
-- answered.  Reads are retried once elsewhere, writes never; the pool marks
-- a node down, reconnects with backoff and marks it up again.  Which
-- server answered is asked of PostgreSQL (inet_server_port()), never taken
-- from the engine's own report.
local ffi = require("ffi")
local cluster = require("support.cluster")
local E = require("support.engine")

local WHO = "SELECT inet_server_port()"

describe("node failures", function()
  local bed, c, ports
  local eng, paths = nil, {}

  setup(function()
    bed = cluster.start({ clusters = { { name = "main", replicas = 2 } } })
    c = bed.clusters.main
    ports = E.port_names(bed)
    bed:psql(c.primary, "CREATE TABLE failure_items (id serial PRIMARY KEY, v text)")
  end)

  teardown(function()
    if eng then eng:close() end
    for _, p in ipairs(paths) do os.remove(p) end
    if bed then bed:teardown() end
  end)

  after_each(function()
    if eng then eng:close() end
    eng = nil
    -- Leave every server running for the next case.
    for _, node in ipairs({ c.primary, c.replicas[1], c.replicas[2] }) do
      if not node.running then bed:start_node(node) end
    end
    bed:wait_replicas_streaming("main")
  end)

  -- The first case stops a replica from inside the stream of reads, so
  -- pg_ctl blocks the engine's loop meanwhile: on a slow machine for longer
  -- than the default 5 s a query waits for a connection.
  local POOL = [[
    pool = { min = 2, max = 8, connect_timeout = 5, acquire_timeout = 60,
             reconnect_min = 0.1, reconnect_max = 0.5 },
  ]]

  local function start(view, pool)
    view = view or bed
    local path = E.write_config(view, { extra = pool or POOL })
    paths[#paths + 1] = path
    local e, err = E.new(path)
    assert(e, err)
    eng = e
    return e
  end

  local function warm(e)
    assert.is_true(e:run_until(function()
      for _, st in pairs(e:node_stats()) do
        if st.idle < 2 then return false end
      end
      return true
    end, 10), "the pools never warmed up")
  end

  local function who(reply)
    return ports[reply.value]
  end

  local function tally(replies, from, to)
    return E.tally(replies, ports, from, to)
  end

  local function events_for(e, kind, node)
    local out = {}
    for _, ev in ipairs(e:events_of(kind)) do
      if ev.node == node then out[#out + 1] = ev end
    end
    return out
  end

  it("loses no read when a replica stops in the middle of a stream, and takes it back", function()
    local e = start()
    warm(e)
    local STOP_AT = 200
    local replies = e:query_many(600, 8, function(i)
      if i == STOP_AT then bed:stop_node(c.replicas[1], "immediate") end
      return WHO
    end)
    local all = tally(replies)
    assert.are.equal(0, all.failed, all.why)
    -- pg_ctl -w returned before read STOP_AT was submitted: no later read
    -- can have been answered by replica1.
    local after = tally(replies, STOP_AT)
    assert.are.equal(0, after.replica1, after.why)
    assert.are.equal(0, after.primary, after.why)
    local before = tally(replies, 1, STOP_AT - 1)
    assert.is_true(before.replica1 > 50, before.why)

    assert.is_false(e:node_stats()["main.replica1"].healthy)
    assert.are.equal(1, #events_for(e, "node_down", "main.replica1"), e:event_log())
    assert.are.equal(0, #events_for(e, "node_down", "main.replica2"), e:event_log())

    -- Down for a while: the pool keeps trying, with backoff.
    e:run_for(1.5)
    local down = tally(e:query_many(100, 4, function() return WHO end))
    assert.are.equal(0, down.failed, down.why)
    assert.are.equal(100, down.replica2, down.why)

    bed:start_node(c.replicas[1])
    assert.is_true(e:run_until(function()
      return #events_for(e, "node_up", "main.replica1") == 1
    end, 15), "no node_up event for main.replica1")
    assert.is_true(e:node_stats()["main.replica1"].healthy)
    assert.is_true(e:run_until(function() return e:node_stats()["main.replica1"].idle >= 2 end, 10),
      "the pool did not refill to pool.min")
    local back = tally(e:query_many(200, 4, function() return WHO end))
    assert.are.equal(0, back.failed, back.why)
    assert.is_true(math.abs(back.replica1 - 100) <= 10, back.why)
  end)

  -- Each backoff step sends one probe, not pool.min connections at once
  -- (which would also double the backoff once per failed connection).
  it("stops connecting to a node that is down until the poller finds it again", function()
    local e = start(nil, [[
      pool = { min = 4, max = 8, connect_timeout = 5, reconnect_min = 0.1, reconnect_max = 0.5 },
      health = { interval = 0.2, timeout = 1, fall = 2, rise = 2 },
    ]])
    assert.is_true(e:run_until(function()
      for _, st in pairs(e:node_stats()) do
        if st.idle < 4 then return false end
      end
      return true
    end, 10), "the pools never warmed up")
    local function connect_failures()
      local n = 0
      for _, l in ipairs(e.logs) do
        if l.message:find("main.replica2: connect failed", 1, true) then n = n + 1 end
      end
      return n
    end
    bed:stop_node(c.replicas[2], "immediate")
    assert.is_true(e:run_until(function() return not e:node_stats()["main.replica2"].healthy end, 10),
      "main.replica2 was never marked down\n" .. e:event_log())
    local at_down = connect_failures()
    -- Ten poll intervals and several backoff steps: the pool stays away.
    e:run_for(2.0)
    assert.are.equal(at_down, connect_failures())
    assert.are.equal(0, e:node_stats()["main.replica2"].connecting)
    bed:start_node(c.replicas[2])
    assert.is_true(e:run_until(function()
      local st = e:node_stats()["main.replica2"]
      return st.healthy and st.idle >= 4
    end, 20), "main.replica2 never came back with a full pool\n" .. e:event_log())
    local up = events_for(e, "node_up", "main.replica2")
    assert.are.equal(1, #up)
    assert.matches("health checks pass", up[1].message)
  end)

  -- With a fast shutdown every backend sends FATAL 57P01 before closing.
  -- A read sent on such a pooled connection before the loop noticed gets
  -- that FATAL as its only result, which is no answer: it must still be
  -- retried elsewhere.
  it("retries reads sent on pooled connections of a replica that just shut down", function()
    local e = start()
    warm(e)
    bed:stop_node(c.replicas[1], "fast")
    -- Submitted before the loop turns: half of them go out on replica1's
    -- dead idle connections.
    local count = tally(e:query_many(20, 4, function() return WHO end))
    assert.are.equal(0, count.failed, count.why)
    assert.are.equal(0, count.replica1, count.why)
    assert.is_true(count.retried >= 1, count.why)
  end)

  it("never retries a write: with the primary down it fails with 08006", function()
    local e = start()
    warm(e)
    local w = e:query("INSERT INTO failure_items (v) VALUES ('before') RETURNING inet_server_port()")
    assert.is_true(w.ok, w.message)
    bed:stop_node(c.primary, "immediate")
    -- At once, on the pooled connection the loop has not yet seen die.
    local first = e:query("INSERT INTO failure_items (v) VALUES ('lost 1')")
    assert.is_false(first.ok)
    assert.are.equal("08006", first.sqlstate, first.message)
    assert.is_false(first.retried)
    assert.is_truthy(first.message and first.message:find("main.primary", 1, true), first.message)
    -- Once the engine knows the primary is down.
    assert.is_true(e:run_until(function() return not e:node_stats()["main.primary"].healthy end, 10))
    local second = e:query("INSERT INTO failure_items (v) VALUES ('lost 2')")
    assert.is_false(second.ok)
    assert.are.equal("08006", second.sqlstate, second.message)
    assert.is_false(second.retried)
    -- Reads carry on through the replicas.
    local reads = tally(e:query_many(50, 4, function() return WHO end))
    assert.are.equal(0, reads.failed, reads.why)
    assert.are.equal(0, reads.primary, reads.why)

    bed:start_node(c.primary)
    assert.is_true(e:run_until(function() return e:node_stats()["main.primary"].healthy end, 15))
    local later = e:query("INSERT INTO failure_items (v) VALUES ('after') RETURNING inet_server_port()")
    assert.is_true(later.ok, later.message)
    assert.are.equal("primary", who(later))
    -- Nothing was written twice or behind the client's back.
    assert.are.equal("before,after", bed:psql(c.primary,
      "SELECT string_agg(v, ',' ORDER BY id) FROM failure_items"))
  end)

  it("serves through the other nodes when a configured node never answers", function()
    local nowhere = cluster.free_port()
    local view = { clusters = { main = {
      primary = c.primary,
      replicas = {
        { name = "replica1", conninfo = ("host=127.0.0.1 port=%d dbname=postgres user=postgres"):format(nowhere) },
        c.replicas[2],
      },
    } } }
    local e = start(view)
    local count = tally(e:query_many(200, 4, function() return WHO end))
    assert.are.equal(0, count.failed, count.why)
    assert.are.equal(200, count.replica2, count.why)
    local w = e:query("INSERT INTO failure_items (v) VALUES ('unreachable') RETURNING inet_server_port()")
    assert.is_true(w.ok, w.message)
    assert.are.equal("primary", who(w))
    assert.is_false(e:node_stats()["main.replica1"].healthy)
    assert.are.equal(1, #events_for(e, "node_down", "main.replica1"), e:event_log())
    assert.is_true(e:node_stats()["main.replica2"].healthy)
    assert.is_true(e:node_stats()["main.primary"].healthy)
    bed:psql(c.primary, "DELETE FROM failure_items WHERE v = 'unreachable'")
  end)
  -- A host that blocks the engine's loop (a slow callback, a paused VM)
  -- lets deadlines pass while the servers' answers sit unread, and libev
  -- runs the expired timers of a turn before its io.  That stall is ours,
  -- not the nodes' failure.
  it("marks no node down when its own loop stalls past the connect and poll deadlines", function()
    local e = start(nil, [[
      pool = { min = 2, max = 8, connect_timeout = 0.3, reconnect_min = 0.1, reconnect_max = 0.5 },
      health = { interval = 0.2, timeout = 0.3, fall = 1, rise = 1 },
    ]])
    -- The pools' connects started with the engine; one turn starts the
    -- health polls' connects.  Then the loop stalls past both deadlines.
    e:turn()
    ffi.C.usleep(800000)
    e:run_for(1)
    local count = tally(e:query_many(100, 4, function() return WHO end))
    assert.are.equal(0, count.failed, count.why)
    assert.are.equal(0, count.primary, count.why)
    assert.are.equal(0, #e:events_of("node_down"), e:event_log())
    for name, st in pairs(e:node_stats()) do
      assert.is_true(st.healthy, name)
    end
  end)

  it("gives up on a node that accepts TCP but never answers, by its own connect timer", function()
    -- the relay accepts and then holds every byte for 10 minutes
    local silent = bed:start_relay(c.replicas[1], 600000)
    local view = { clusters = { main = {
      primary = c.primary,
      replicas = { { name = "replica1", conninfo = silent.conninfo }, c.replicas[2] },
    } } }
    local e = start(view, [[
      pool = { min = 1, max = 4, connect_timeout = 1, reconnect_min = 0.2, reconnect_max = 1 },
      health = { interval = 0.5, timeout = 1, fall = 2, rise = 1 },
    ]])
    local count = tally(e:query_many(100, 4, function() return WHO end))
    assert.is_true(e:run_until(function() return not e:node_stats()["main.replica1"].healthy end, 10))
    silent.stop()
    assert.are.equal(0, count.failed, count.why)
    assert.are.equal(0, count.replica1, count.why)
    local down = events_for(e, "node_down", "main.replica1")
    assert.is_true(#down >= 1, e:event_log())
    assert.matches("connection timed out after 1%.0 s", down[1].message)
  end)
end)

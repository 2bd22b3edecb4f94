-- Per-node pools against real servers: warm-up, the maximum, the acquire
-- deadline, idle timeout, maximum lifetime, broken connections and the
-- counters.  What the servers hold is asked of PostgreSQL itself
-- (pg_stat_activity, pg_backend_pid()), never taken from the engine.
--
-- Every engine connects with its own application_name, so a count on the
-- server sees only that engine.  The engine's health poller connects with
-- the same conninfo; its backend is told apart by its query text.
local cluster = require("support.cluster")
local E = require("support.engine")

describe("pools against real servers", function()
  local bed, c
  local eng, paths = nil, {}
  local app_seq = 0

  setup(function()
    bed = cluster.start({ clusters = { { name = "main", replicas = 1 } } })
    c = bed.clusters.main
    bed:psql(c.primary, "CREATE TABLE pool_items (id serial PRIMARY KEY, v text)")
  end)

  teardown(function()
    if eng then eng:close() end
    for _, p in ipairs(paths) do os.remove(p) end
    if bed then bed:teardown() end
  end)

  after_each(function()
    if eng then eng:close() end
    eng = nil
  end)

  -- Runs the engine's loop until pred() holds; false after `seconds`.
  local function eventually(e, pred, seconds)
    local deadline = cluster.now() + (seconds or 10)
    repeat
      e:run_for(0.05)
      if pred() then return true end
    until cluster.now() > deadline
    return false
  end

  -- Starts an engine with the given pool settings; opts.replica adds the
  -- replica (otherwise the primary alone serves reads and writes).
  -- Returns the engine and its application_name.
  local function start(pool, opts)
    opts = opts or {}
    app_seq = app_seq + 1
    local app = "sy_pool_spec_" .. app_seq
    local function with_app(node)
      return { name = node.name, conninfo = node.conninfo .. " application_name=" .. app }
    end
    local view = { clusters = { main = {
      primary = with_app(c.primary),
      replicas = opts.replica and { with_app(c.replicas[1]) } or {},
    } } }
    local path = E.write_config(view, { extra = "pool = " .. pool .. "," })
    paths[#paths + 1] = path
    local e, err = E.new(path)
    assert(e, err)
    eng = e
    -- The health poller names its own connection "switchyard health", so
    -- counting this application_name counts the pool alone.
    return e, app
  end

  -- Backends of the engine's pool on a server.
  local function backends(node, app)
    return tonumber(bed:psql(node, ("SELECT count(*) FROM pg_stat_activity WHERE application_name = '%s'")
      :format(app)))
  end

  local function backend_alive(node, pid)
    return bed:psql(node, "SELECT count(*) FROM pg_stat_activity WHERE pid = " .. pid) == "1"
  end

  local function stats(e)
    return e:node_stats()["main.primary"]
  end

  it("warm-up opens pool.min connections to every node, and no more", function()
    local e, app = start("{ min = 3, max = 6 }", { replica = true })
    local last = {}
    assert.is_true(eventually(e, function()
      last.p, last.r = backends(c.primary, app), backends(c.replicas[1], app)
      return last.p == 3 and last.r == 3
    end), ("primary has %s, replica %s connections"):format(last.p, last.r))
    e:run_for(1.0)
    assert.are.equal(3, backends(c.primary, app))
    assert.are.equal(3, backends(c.replicas[1], app))
    for name, st in pairs(e:node_stats()) do
      assert.are.equal(3, st.idle, name)
      assert.are.equal(0, st.busy, name)
      assert.are.equal(0, st.connecting, name)
      assert.are.equal(0, st.queries, name)
    end
  end)

  it("never holds more than pool.max connections under 50 concurrent queries", function()
    local e, app = start("{ min = 1, max = 4, acquire_timeout = 60 }")
    local replies, done = {}, 0
    for i = 1, 50 do
      assert.are.equal(0, e:submit("SELECT pg_sleep(0.25)", nil, function(r)
        replies[i] = r
        done = done + 1
      end))
    end
    local max_server, max_engine, max_waiting = 0, 0, 0
    while done < 50 do
      e:run_for(0.05)
      max_server = math.max(max_server, backends(c.primary, app))
      local st = stats(e)
      max_engine = math.max(max_engine, st.idle + st.busy + st.connecting)
      max_waiting = math.max(max_waiting, st.waiting)
    end
    for i = 1, 50 do assert.is_true(replies[i].ok, replies[i].message) end
    assert.are.equal(4, max_server)
    assert.are.equal(4, max_engine)
    assert.is_true(max_waiting >= 30, "at most " .. max_waiting .. " queries waited")
    assert.are.equal(50, stats(e).queries)
  end)

  it("fails a query that waits longer than acquire_timeout with 53300 and a pool_exhausted event",
    function()
      local e = start("{ min = 1, max = 1, acquire_timeout = 0.5 }")
      local long
      assert.are.equal(0, e:submit("SELECT pg_sleep(2)", nil, function(r) long = r end))
      assert.is_true(e:run_until(function() return stats(e).inflight == 1 end, 10))
      local st = stats(e)
      assert.are.equal(1, st.busy)
      assert.are.equal(0, st.idle)
      local waited
      assert.are.equal(0, e:submit("SELECT 1", nil, function(r) waited = r end))
      e:run_for(0.1)
      assert.are.equal(1, stats(e).waiting)
      assert.is_true(e:run_until(function() return waited ~= nil end, 10))
      assert.is_false(waited.ok)
      assert.are.equal("53300", waited.sqlstate)
      assert.are.equal(-8, waited.status) -- SY_ETIMEOUT
      assert.is_false(waited.retried)
      local ev = e:events_of("pool_exhausted")
      assert.are.equal(1, #ev)
      assert.are.equal("main.primary", ev[1].node)
      assert.is_nil(long, "the long query should still be running")
      assert.is_true(e:run_until(function() return long ~= nil end, 10))
      assert.is_true(long.ok, long.message)
      st = stats(e)
      assert.are.equal(1, st.exhausted)
      assert.are.equal(1, st.errors)
      assert.are.equal(0, st.waiting)
      -- The pool still serves once the connection is free.
      assert.is_true(e:query("SELECT 1").ok)
    end)

  it("closes idle connections above pool.min after idle_timeout", function()
    local e, app = start("{ min = 1, max = 4, idle_timeout = 1 }")
    local replies = e:query_many(4, 4, function() return "SELECT pg_sleep(0.3)" end)
    for _, r in ipairs(replies) do assert.is_true(r.ok, r.message) end
    assert.are.equal(4, stats(e).idle)
    assert.are.equal(4, backends(c.primary, app))
    e:run_for(2.5)
    assert.are.equal(1, stats(e).idle)
    assert.is_true(cluster.wait_for(function() return backends(c.primary, app) == 1 end, 5,
      "the server to see the idle connections go"))
    assert.is_true(e:query("SELECT 1").ok)
  end)

  it("recycles a connection after max_lifetime", function()
    local e, app = start("{ min = 1, max = 1, max_lifetime = 1 }")
    local first = e:query("SELECT pg_backend_pid()")
    assert.is_true(first.ok, first.message)
    e:run_for(2.5)
    local second = e:query("SELECT pg_backend_pid()")
    assert.is_true(second.ok, second.message)
    assert.are_not.equal(first.value, second.value)
    assert.is_true(cluster.wait_for(function() return not backend_alive(c.primary, first.value) end, 5,
      "the recycled backend to exit"))
    -- It keeps pool.min open meanwhile (a fresh connection, itself recycled
    -- a second later).
    assert.is_true(eventually(e, function() return backends(c.primary, app) == 1 end))
  end)

  it("replaces an idle connection the server killed", function()
    local e, app = start("{ min = 1, max = 1 }")
    local first = e:query("SELECT pg_backend_pid()")
    assert.is_true(first.ok, first.message)
    assert.are.equal("t", bed:psql(c.primary, "SELECT pg_terminate_backend(" .. first.value .. ")"))
    assert.is_true(eventually(e, function()
      local st = stats(e)
      return st.idle == 1 and backends(c.primary, app) == 1
        and not backend_alive(c.primary, first.value)
    end), "the killed connection was not replaced")
    local second = e:query("SELECT pg_backend_pid()")
    assert.is_true(second.ok, second.message)
    assert.are_not.equal(first.value, second.value)
    assert.are.equal(0, stats(e).errors)
    assert.is_true(stats(e).healthy)
  end)

  -- The loop has not run since the server killed the idle connection, so
  -- its FATAL and EOF sit unread in the socket and PQstatus() still says
  -- CONNECTION_OK until libpq reads them: the pool must look before it
  -- hands the connection to a write, which cannot be retried.
  it("does not hand out an idle connection the server killed before the loop noticed", function()
    local e = start("{ min = 1, max = 1 }")
    local first = e:query("SELECT pg_backend_pid()")
    assert.is_true(first.ok, first.message)
    -- Wait for the backend to be gone without turning the engine's loop.
    assert.are.equal("t", bed:psql(c.primary, "SELECT pg_terminate_backend(" .. first.value .. ")"))
    assert.is_true(cluster.wait_for(function() return not backend_alive(c.primary, first.value) end, 5,
      "the killed backend to exit"))
    local w = e:query("INSERT INTO pool_items (v) VALUES ('after kill') RETURNING pg_backend_pid()")
    assert.is_true(w.ok, ("%s %s"):format(tostring(w.sqlstate), tostring(w.message)))
    assert.are_not.equal(first.value, w.value)
    assert.are.equal("1", bed:psql(c.primary, "SELECT count(*) FROM pool_items WHERE v = 'after kill'"))
  end)

  it("keeps node counters consistent with what ran", function()
    local e = start("{ min = 1, max = 4 }")
    local ok = e:query_many(20, 4, function() return "SELECT 1" end)
    local bad = e:query_many(5, 2, function() return "SELECT 1/0" end)
    local slow = e:query_many(10, 4, function() return "SELECT pg_sleep(0.06)" end)
    for _, r in ipairs(ok) do assert.is_true(r.ok, r.message) end
    for _, r in ipairs(slow) do assert.is_true(r.ok, r.message) end
    for _, r in ipairs(bad) do
      assert.is_false(r.ok)
      assert.are.equal("22012", r.sqlstate)
      assert.are.equal("main.primary", r.node)
    end
    local st = stats(e)
    assert.are.equal(35, st.queries)
    assert.are.equal(5, st.errors)
    assert.are.equal(0, st.retries)
    assert.are.equal(0, st.inflight)
    assert.are.equal(0, st.busy)
    assert.are.equal(0, st.waiting)
    assert.are.equal(0, st.exhausted)
    assert.is_true(st.idle >= 1 and st.idle <= 4, "idle " .. st.idle)
    assert.is_true(st.latency_avg_ms > 0)
    assert.is_true(st.p50 <= st.p95 and st.p95 <= st.p99, ("p50 %g p95 %g p99 %g"):format(st.p50, st.p95, st.p99))
    -- 10 of the 35 slept 60 ms: the slowest 5% did.
    assert.is_true(st.p95 >= 60, "p95 " .. st.p95)
    assert.are.equal(35, e:engine_stats().queries)
  end)

  -- ev_now() is the time of the loop's last wake-up: a host that calls
  -- sy_query() outside a loop callback after being busy for a while must
  -- not see that while counted as the node's latency.
  it("does not count the time before a query was submitted as its latency", function()
    local e = start("{ min = 1, max = 1 }")
    assert.is_true(eventually(e, function() return stats(e).idle == 1 end))
    cluster.sleep(2) -- the host is busy; the engine's loop does not run
    local r = e:query("SELECT 1")
    assert.is_true(r.ok, r.message)
    local st = stats(e)
    assert.are.equal(1, st.queries)
    assert.is_true(st.latency_avg_ms < 1000,
      ("SELECT 1 on an idle pooled connection recorded %.0f ms"):format(st.latency_avg_ms))
  end)
end)

-- The five balancers against real servers: one primary and four streaming
-- replicas.  replica1 and replica2 are ordinary; replica3 replays commits an
-- hour late and replica4 two seconds late, so they lag as soon as the
-- primary writes (only the lag cases put them in their configs).  Each case
-- starts its own engine with its own config and closes it.  Which server
-- answered is asked of PostgreSQL (inet_server_port()), never taken from
-- the engine's own report.
local cluster = require("support.cluster")
local E = require("support.engine")

local WHO = "SELECT inet_server_port()"

describe("balancers against real replicas", function()
  local bed, c, ports
  local eng, paths = nil, {}

  setup(function()
    bed = cluster.start({ clusters = { {
      name = "main", replicas = 4,
      replica_settings = {
        [3] = { recovery_min_apply_delay = "1h" },
        [4] = { recovery_min_apply_delay = "2s" },
      },
    } } })
    c = bed.clusters.main
    -- Replayed by replica1, 2 and (two seconds later) 4; never by 3.
    bed:psql(c.primary, "CREATE TABLE lag_probe (id int, pad text)")
    bed:psql(c.primary, "INSERT INTO lag_probe SELECT g, repeat('x', 100) FROM generate_series(1, 20000) g")
    ports = E.port_names(bed)
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

  -- A config for the primary and the given replicas (default replica1 and
  -- replica2); a replica may be replaced by { name =, conninfo = }.
  local function config(extra, opts)
    opts = opts or {}
    local view = { clusters = { main = {
      primary = c.primary,
      replicas = opts.replicas or { c.replicas[1], c.replicas[2] },
    } } }
    local path = E.write_config(view, { extra = extra, weights = opts.weights })
    paths[#paths + 1] = path
    return path
  end

  local function start(extra, opts)
    local e, err = E.new(config(extra, opts))
    assert(e, err)
    eng = e
    return e
  end

  -- Runs the loop until every node's pool holds its minimum, so the first
  -- reads do not wait for connections.
  local function warm(e)
    assert.is_true(e:run_until(function()
      for _, st in pairs(e:node_stats()) do
        if st.idle + st.busy < 1 or st.connecting > 0 then return false end
      end
      return true
    end, 10), "the pools never warmed up")
    e:run_for(0.1)
  end

  local function served_by(reply)
    assert.is_true(reply.ok, reply.message)
    local who = ports[reply.value]
    assert(who, "unknown server port " .. tostring(reply.value))
    return who
  end

  local function tally(replies)
    return E.tally(replies, ports)
  end

  local function shown(count)
    return count.why
  end

  it("weighted 3:1 sends 750/250 of 1000 reads and none to the primary", function()
    start([[
      policy_options = { balancer = "weighted" },
      pool = { min = 2, max = 8 },
    ]], { weights = { 3, 1 } })
    local count = tally(eng:query_many(1000, 16, function() return WHO end))
    assert.are.equal(0, count.failed, shown(count))
    assert.are.equal(0, count.primary, shown(count))
    assert.is_true(math.abs(count.replica1 - 750) <= 20, shown(count))
    assert.is_true(math.abs(count.replica2 - 250) <= 20, shown(count))
  end)

  it("least connections sends reads away from a replica busy with long queries", function()
    start([[
      policy_options = { balancer = "least_connections" },
      pool = { min = 1, max = 12, acquire_timeout = 10 },
    ]])
    local HELD = 6
    local long, done = {}, 0
    for i = 1, HELD do
      assert.are.equal(0, eng:submit("SELECT inet_server_port(), pg_sleep(3) /* sy: node=main.replica1 */",
        nil, function(r) long[i] = r; done = done + 1 end))
    end
    -- node.inflight counts queries running on a connection, so wait until
    -- all of them really run on replica1.
    assert.is_true(eng:run_until(function()
      return eng:node_stats()["main.replica1"].inflight == HELD
    end, 10), "the long queries never all ran on main.replica1")
    -- Fewer reads in flight at once than replica1 holds: replica2 is always
    -- the less loaded one.
    local count = tally(eng:query_many(200, HELD - 2, function() return WHO end))
    assert.are.equal(HELD, eng:node_stats()["main.replica1"].inflight,
      "the long queries ended before the reads did; the case proves nothing")
    assert.are.equal(0, count.failed, shown(count))
    assert.are.equal(0, count.primary, shown(count))
    assert.are.equal(0, count.replica1, shown(count))
    assert.are.equal(200, count.replica2, shown(count))
    assert.is_true(eng:run_until(function() return done == HELD end, 10))
    for i = 1, HELD do assert.are.equal("replica1", served_by(long[i])) end
  end)

  it("least connections shares reads evenly between idle replicas", function()
    start([[
      policy_options = { balancer = "least_connections" },
      pool = { min = 1, max = 8 },
    ]])
    -- One at a time: both replicas are always idle, ties go round robin.
    local count = tally(eng:query_many(200, 1, function() return WHO end))
    assert.are.equal(0, count.failed, shown(count))
    assert.are.equal(0, count.primary, shown(count))
    assert.is_true(math.abs(count.replica1 - 100) <= 2, shown(count))
  end)

  it("response time sends most reads to the replica that answers faster", function()
    local relay = bed:start_relay(c.replicas[1], 30)
    start([[
      policy_options = { balancer = "response_time" },
      pool = { min = 1, max = 4 },
    ]], { replicas = { { name = "replica1", conninfo = relay.conninfo }, c.replicas[2] } })
    local count = tally(eng:query_many(400, 1, function() return WHO end))
    relay.stop()
    assert.are.equal(0, count.failed, shown(count))
    assert.are.equal(0, count.primary, shown(count))
    -- The slow one still gets its exploration share, so it stays measured.
    assert.is_true(count.replica1 >= 1, shown(count))
    assert.is_true(count.replica2 > 0.8 * 400, shown(count))
    local stats = eng:node_stats()
    assert.is_true(stats["main.replica1"].latency_avg_ms > stats["main.replica2"].latency_avg_ms,
      "replica1 behind the relay should average slower")
  end)

  it("health aware gives no reads, and no failed reads, to a replica that is down", function()
    start([[
      policy_options = { balancer = "health_aware" },
      pool = { min = 2, max = 8, reconnect_min = 0.1, reconnect_max = 0.5 },
    ]])
    warm(eng)
    local before = tally(eng:query_many(100, 4, function() return WHO end))
    assert.are.equal(0, before.failed, shown(before))
    assert.is_true(before.replica2 > 0, "replica2 served nothing while up: " .. shown(before))
    bed:stop_node(c.replicas[2], "fast")
    local ok, err = pcall(function()
      local count = tally(eng:query_many(300, 4, function() return WHO end))
      assert.are.equal(0, count.failed, shown(count))
      assert.are.equal(0, count.replica2, shown(count))
      assert.are.equal(0, count.primary, shown(count))
      assert.are.equal(300, count.replica1, shown(count))
      assert.is_false(eng:node_stats()["main.replica2"].healthy)
    end)
    bed:start_node(c.replicas[2])
    bed:wait_replicas_streaming("main")
    assert(ok, err)
    -- Back up: it is found again and shares the reads.
    assert.is_true(eng:run_until(function() return eng:node_stats()["main.replica2"].healthy end, 10),
      "replica2 never came back up")
    warm(eng)
    local after = tally(eng:query_many(200, 4, function() return WHO end))
    assert.are.equal(0, after.failed, shown(after))
    assert.is_true(after.replica2 >= 50, shown(after))
  end)

  -- The figures a replica earns while failing (error_rate, latency) only
  -- move when it serves queries, and health_aware sends none to a node it
  -- scores under the threshold: unless the engine refreshes them (on
  -- node_up, from the health poll) a replica that broke a few queries and
  -- came back is shunned for good.
  it("health aware sends reads again to a replica that broke queries and came back", function()
    start([[
      policy_options = { balancer = "health_aware" },
      pool = { min = 2, max = 16, reconnect_min = 0.1, reconnect_max = 0.5 },
    ]])
    warm(eng)
    local long, done = {}, 0
    for i = 1, 10 do
      assert.are.equal(0, eng:submit("SELECT inet_server_port(), pg_sleep(2)", nil,
        function(r) long[i] = r; done = done + 1 end))
    end
    assert.is_true(eng:run_until(function()
      local s = eng:node_stats()
      return s["main.replica1"].inflight + s["main.replica2"].inflight == 10
    end, 10), "the long queries never all ran")
    assert.is_true(eng:node_stats()["main.replica2"].inflight >= 4,
      "too few long queries on replica2 for the case to mean anything")
    bed:kill_node(c.replicas[2])
    local ok, err = pcall(function()
      assert.is_true(eng:run_until(function() return done == 10 end, 20))
      for i = 1, 10 do
        assert.is_true(long[i].ok, long[i].message)
        assert.are_not.equal("replica2", ports[long[i].value])
      end
    end)
    bed:start_node(c.replicas[2])
    bed:wait_replicas_streaming("main")
    assert(ok, err)
    assert.is_true(eng:run_until(function() return eng:node_stats()["main.replica2"].healthy end, 10),
      "replica2 never came back up")
    warm(eng)
    local after = tally(eng:query_many(300, 4, function() return WHO end))
    assert.are.equal(0, after.failed, shown(after))
    assert.is_true(after.replica2 >= 75, "the recovered replica is shunned: " .. shown(after))
  end)

  -- A query's latency is counted from when it is sent on its connection:
  -- the first queries on a cold pool must not charge the connect time
  -- (three round trips: SSL request, startup, the query) to the node, or
  -- health_aware drops the node on that figure and never measures it
  -- again.  Behind a 50 ms relay replica1 answers a query in about 100 ms,
  -- which with latency_ref_ms = 200 scores about 65, above the threshold of
  -- 50; a connect-inflated first sample of 300 ms or more scores under 40.
  it("health aware gives a distant replica its share from a cold start", function()
    local relay = bed:start_relay(c.replicas[1], 50)
    start([[
      policy_options = {
        balancer = "health_aware",
        balancer_options = { latency_ref_ms = 200 },
      },
      pool = { min = 1, max = 8 },
    ]], { replicas = { { name = "replica1", conninfo = relay.conninfo .. " sslmode=prefer" }, c.replicas[2] } })
    local count = tally(eng:query_many(200, 4, function() return WHO end))
    local st = eng:node_stats()["main.replica1"]
    relay.stop()
    local why = shown(count) .. (" (replica1: %d queries, latency avg %.0f ms, p50 %.0f ms)")
      :format(st.queries, st.latency_avg_ms, st.p50)
    assert.are.equal(0, count.failed, why)
    assert.are.equal(0, count.primary, why)
    assert.is_true(count.replica1 >= 30, why)
    assert.is_true(count.replica2 > count.replica1, why)
  end)

  -- replica4 replays every commit two seconds late: while the primary keeps
  -- committing, the last transaction it replayed is always two seconds old.
  it("health aware gives no reads to a replica whose replay lags behind", function()
    start([[
      policy_options = {
        balancer = "health_aware",
        balancer_options = { max_lag_ms = 500 },
      },
      pool = { min = 1, max = 8 },
      health = { interval = 0.2 },
    ]], { replicas = { c.replicas[1], c.replicas[4] } })
    -- setup() committed long enough ago for replica4 to have replayed it.
    assert.are_not.equal("", bed:psql(c.replicas[4], "SELECT pg_last_xact_replay_timestamp()"))
    for i = 1, 6 do
      bed:psql(c.primary, "INSERT INTO lag_probe VALUES (" .. i .. ", 'tick')")
      eng:run_for(0.5)
    end
    local count = tally(eng:query_many(200, 4, function() return WHO end))
    assert.are.equal(0, count.failed, shown(count))
    assert.are.equal(0, count.replica4, shown(count))
    assert.are.equal(200, count.replica1, shown(count))
  end)

  -- replica3 has received megabytes of WAL it has not replayed but has
  -- replayed no transaction since it started, so
  -- pg_last_xact_replay_timestamp() is NULL: the poller must not read that
  -- as "not behind" (health_aware trusts a known lag_ms and then never
  -- looks at lag_bytes).
  it("health aware gives no reads to a replica that has replayed nothing since it started", function()
    start([[
      policy_options = {
        balancer = "health_aware",
        balancer_options = { max_lag_ms = 500, lag_ref_bytes = 65536 },
      },
      pool = { min = 1, max = 8 },
      health = { interval = 0.2 },
    ]], { replicas = { c.replicas[1], c.replicas[3] } })
    assert.are.equal("t", bed:psql(c.replicas[3],
      "SELECT pg_last_xact_replay_timestamp() IS NULL"
      .. " AND pg_last_wal_receive_lsn() - pg_last_wal_replay_lsn() > 1000000"))
    eng:run_for(1.5)
    local count = tally(eng:query_many(200, 4, function() return WHO end))
    assert.are.equal(0, count.failed, shown(count))
    assert.are.equal(0, count.replica3, shown(count))
    assert.are.equal(200, count.replica1, shown(count))
  end)
end)

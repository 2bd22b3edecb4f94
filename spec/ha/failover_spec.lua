-- Managed failover (core/failover.c) against real servers: the primary is
-- killed with SIGKILL under a write load; a replica is promoted, the other
-- follows it, writes resume on it and none acknowledged before the kill is
-- missing; the old primary, restarted, is fenced.  Commits wait for one
-- standby (synchronous_standby_names = 'ANY 1 (*)' with synchronous_commit
-- on, which the test bed otherwise turns off for speed), so an
-- acknowledged write is on a replica when the primary dies, as a DBA who
-- needs that guarantee would configure it.
local cluster = require("support.cluster")
local E = require("support.engine")

local CONFIG = [[
  failover = { mode = "managed", write_wait = 15 },
]]
local HEALTH = "health = { interval = 0.25, timeout = 1, fall = 3, rise = 1 },"

describe("managed failover", function()
  local bed, c, ports, eng

  setup(function()
    bed = cluster.start({ clusters = { { name = "main", replicas = 2,
      settings = cluster.SYNCHRONOUS } } })
    c = bed.clusters.main
    ports = E.port_names(bed, "main.")
    bed:psql(c.primary, "CREATE TABLE fo_items (v int PRIMARY KEY, at_port int)")
    bed:wait_replicas_streaming("main")
    eng = assert(E.new(E.write_config(bed, { cluster_extra = CONFIG, extra = HEALTH })))
  end)

  teardown(function()
    if eng then eng:close() end
    if bed then bed:teardown() end
  end)

  it("promotes a replica when the primary is killed under writes; nothing acknowledged is lost", function()
    assert.is_true(eng:wait_polled())
    local w = eng:writer(function(v)
      return "INSERT INTO fo_items VALUES ($1, inet_server_port()) RETURNING at_port", { v }
    end)
    local acked, failures = w.acked, w.failures
    local started_at -- when failover_started fired (cluster.now())
    local t_end = cluster.now() + 1
    w.run_while(function() return cluster.now() < t_end end, 5)
    local before_kill = #acked
    assert.is_true(before_kill > 0, "no write went through before the kill")
    local t_kill = cluster.now()
    bed:kill_node(c.primary)
    local first_after
    assert.is_true(w.run_while(function()
      if not started_at and #eng:events_of("failover_started") > 0 then started_at = cluster.now() end
      for i = before_kill + 1, #acked do
        if ports[acked[i].value] ~= "main.primary" then
          first_after = acked[i].at
          return false
        end
      end
      return true
    end, 30), "writes never resumed: " .. eng:event_log())
    -- Keep writing a little on the new primary, then let the load drain.
    t_end = cluster.now() + 0.5
    w.run_while(function() return cluster.now() < t_end end, 5)
    assert.is_true(eng:run_until(function() return w.inflight == 0 end, 20))
    print(("  failover: first write on the new primary %.2f s after the kill"):format(first_after - t_kill))

    local done = eng:events_of("failover_done")
    assert.are.equal(1, #done, eng:event_log())
    local promoted = done[1].node
    assert.matches("^main%.replica[12]$", promoted)
    local other = promoted == "main.replica1" and "main.replica2" or "main.replica1"
    local new_primary = promoted == "main.replica1" and c.replicas[1] or c.replicas[2]
    local other_node = promoted == "main.replica1" and c.replicas[2] or c.replicas[1]
    local st = eng:node_stats()
    assert.are.equal("primary", st[promoted].role)
    assert.is_true(st["main.primary"].fenced)

    -- Every acknowledged write is on the new primary.
    local want = {}
    for _, a in ipairs(acked) do want[#want + 1] = a.seq end
    local have = tonumber(bed:psql(new_primary, ("SELECT count(*) FROM fo_items WHERE v IN (%s)")
      :format(table.concat(want, ","))))
    assert.are.equal(#acked, have)
    -- Writes that came after the failover began waited instead of failing.
    for _, f in ipairs(failures) do
      assert.is_true(started_at == nil or f.sent < started_at,
        ("write %d sent during the failover failed: %s"):format(f.seq, f.message))
    end
    -- The other replica follows the new primary (commits need it: ANY 1).
    cluster.wait_for(function()
      return bed:psql(new_primary, "SELECT count(*) FROM pg_stat_replication WHERE state = 'streaming'") == "1"
    end, 20, other .. " streaming from " .. promoted)
    assert.are.equal(tostring(#acked),
      bed:psql(other_node, ("SELECT count(*) FROM fo_items WHERE v IN (%s)"):format(table.concat(want, ","))))
  end)

  it("keeps the old primary fenced when it comes back, until it is enabled", function()
    local before = eng:node_stats()["main.primary"].queries
    bed:start_node(c.primary)
    assert.is_true(eng:run_until(function() return eng:node_stats()["main.primary"].polls_failed > 0
      and eng:node_stats()["main.primary"].last_error ~= "" and eng:node_stats()["main.primary"].healthy end,
      20), "the old primary never came back: " .. eng:event_log())
    -- Up, a primary by its own account, and still fenced: no split brain,
    -- no query.
    local replies = eng:query_many(50, 4, function(i)
      if i % 2 == 0 then return "INSERT INTO fo_items VALUES ($1, inet_server_port())", { 100000 + i } end
      return "SELECT inet_server_port()"
    end)
    for _, r in ipairs(replies) do assert.is_true(r.ok, r.message) end
    local st = eng:node_stats()["main.primary"]
    assert.is_true(st.fenced)
    assert.are.equal("primary", st.role)
    assert.are.equal(before, st.queries)
    assert.are.equal(0, #eng:events_of("split_brain"))
    -- Enabling it (an operator's call) lifts the fence: now it is a second
    -- primary, which is a split brain, so writes are refused.
    assert.are.equal(0, E.lib.sy_node_set_enabled(eng.e, "main.primary", 1))
    assert.is_false(eng:node_stats()["main.primary"].fenced)
    assert.is_true(eng:run_until(function() return #eng:events_of("split_brain") > 0 end, 5))
    local w = eng:query("INSERT INTO fo_items VALUES (999999, 0)")
    assert.is_false(w.ok)
    assert.matches("more than one primary", w.message)
  end)
end)

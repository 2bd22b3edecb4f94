-- Roles from the servers (health polling, core/roles.c): a cluster listed
-- without roles finds its primary; two nodes claiming primary at once get
-- no write at all until one is gone; an external failover (the primary
-- stopped, a replica promoted behind the engine's back) moves writes to the
-- new primary.  Which server answered is asked of PostgreSQL.  The cases
-- run in order on one test bed: each leaves the servers as the next needs.
local cluster = require("support.cluster")
local E = require("support.engine")

local WHO = "SELECT inet_server_port()"
local HEALTH = "health = { interval = 0.1, timeout = 1, fall = 2, rise = 1 },"

describe("roles from health polling", function()
  local bed, c, ports, eng

  setup(function()
    bed = cluster.start({ clusters = { { name = "main", replicas = 2 } } })
    c = bed.clusters.main
    ports = E.port_names(bed, "main.")
    bed:psql(c.primary, "CREATE TABLE role_items (id serial PRIMARY KEY, port int)")
    bed:wait_replicas_streaming("main")
  end)

  teardown(function()
    if eng then eng:close() end
    if bed then bed:teardown() end
  end)

  after_each(function()
    if eng then eng:close() end
    eng = nil
  end)

  local function start(opts)
    opts = opts or {}
    opts.extra = HEALTH
    local e, err = E.new(E.write_config(bed, opts))
    assert(e, err)
    eng = e
    return e
  end

  local function roles(e)
    local out = {}
    for name, st in pairs(e:node_stats()) do out[name] = st.role end
    return out
  end

  local function write(e)
    return e:query("INSERT INTO role_items (port) VALUES (inet_server_port()) RETURNING port")
  end

  local function rows_on(node)
    return tonumber(bed:psql(node, "SELECT count(*) FROM role_items"))
  end

  it("finds the primary of a cluster whose nodes name no role", function()
    local e = start({ auto_roles = true })
    assert.is_true(e:run_until(function()
      local r = roles(e)
      return r["main.primary"] == "primary" and r["main.replica1"] == "replica"
        and r["main.replica2"] == "replica"
    end, 10), "roles never found: " .. e:event_log())
    local st = e:node_stats()
    assert.is_true(st["main.primary"].timeline >= 1)
    assert.is_true(st["main.primary"].wal_position > 0)
    assert.is_true(st["main.replica1"].polls_ok > 0)
    local w = write(e)
    assert.is_true(w.ok, w.message)
    assert.are.equal("main.primary", ports[w.value])
    for _ = 1, 10 do
      local r = e:query(WHO)
      assert.is_true(r.ok, r.message)
      assert.matches("^main%.replica", ports[r.value])
    end
    -- Each discovered role was announced.
    assert.are.equal(3, #e:events_of("role_changed"))
  end)

  it("refuses every write while two nodes claim to be primary, and says so", function()
    local e = start()
    assert.is_true(e:run_until(function() return e:node_stats()["main.replica2"].polls_ok > 0 end, 10))
    local before = rows_on(c.primary)
    bed:promote_node(c.replicas[2])
    assert.is_true(e:run_until(function() return #e:events_of("split_brain") > 0 end, 15),
      "no split_brain event: " .. e:event_log())
    local ev = e:events_of("split_brain")[1]
    assert.matches("main.primary", ev.message, 1, true)
    assert.matches("main.replica2", ev.message, 1, true)
    assert.is_true(e:node_stats()["main.primary"].split_brain)
    for _ = 1, 5 do
      local w = write(e)
      assert.is_false(w.ok)
      assert.are.equal("08006", w.sqlstate)
      assert.matches("more than one primary", w.message)
    end
    -- Reads go on (the other replica); no write reached either primary.
    local r = e:query(WHO)
    assert.is_true(r.ok, r.message)
    assert.are.equal(before, rows_on(c.primary))
    assert.are.equal(before, rows_on(c.replicas[2]))
    -- The promoted one goes away: one primary again, writes resume there.
    bed:stop_node(c.replicas[2], "immediate")
    assert.is_true(e:run_until(function() return #e:events_of("split_brain_resolved") > 0 end, 15),
      "never resolved: " .. e:event_log())
    local w = write(e)
    assert.is_true(w.ok, w.message)
    assert.are.equal("main.primary", ports[w.value])
    assert.is_false(e:node_stats()["main.primary"].split_brain)
  end)

  it("moves writes to a replica promoted after the primary stopped", function()
    local e = start()
    assert.is_true(e:run_until(function() return e:node_stats()["main.replica1"].polls_ok > 0 end, 10))
    assert.is_true(write(e).ok)
    bed:wait_replayed(c.replicas[1])
    local acknowledged = rows_on(c.primary)
    bed:stop_node(c.primary, "immediate")
    assert.is_true(e:run_until(function() return not e:node_stats()["main.primary"].healthy end, 15))
    local down = write(e)
    assert.is_false(down.ok)
    assert.are.equal("08006", down.sqlstate)
    bed:promote_node(c.replicas[1])
    local t0 = cluster.now()
    local w
    assert.is_true(e:run_until(function()
      w = write(e)
      return w.ok
    end, 15), "writes never resumed: " .. e:event_log())
    local took = cluster.now() - t0
    assert.are.equal("main.replica1", ports[w.value])
    assert.are.equal("primary", roles(e)["main.replica1"])
    local changed = e:events_of("role_changed")
    assert.matches("main.replica1 is now primary", changed[#changed].message, 1, true)
    -- Every write acknowledged before the stop is on the new primary.
    assert.are.equal(acknowledged + 1, rows_on(c.replicas[1]))
    print(("  writes resumed %.2f s after the promotion (interval 0.1 s)"):format(took))
  end)
end)

-- Host names in node conninfos are resolved off the event loop (core/dns.c,
-- getaddrinfo_a) and handed to libpq as hostaddr, so a slow or broken DNS
-- never freezes the engine.  Which server answered is asked of PostgreSQL
-- itself (inet_server_port()), never taken from the engine's report.
local cluster = require("support.cluster")
local E = require("support.engine")
local ffi = require("ffi")
local C = require("support.ffi").C

-- One loop iteration that does not block (EVRUN_NOWAIT).
local function ev_run_nowait(e)
  C.ev_run(e.loop, 1)
end

local WHO = "SELECT inet_server_port()"
local BAD_HOST = "no-such-host.invalid"

describe("name resolution", function()
  local bed, c, ports
  local eng, paths = nil, {}

  setup(function()
    bed = cluster.start({ clusters = { { name = "main", replicas = 2 } } })
    c = bed.clusters.main
    ports = E.port_names(bed)
    bed:psql(c.primary, "CREATE TABLE dns_items (id serial PRIMARY KEY, v text)")
    bed:wait_replicas_streaming("main")
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

  -- The node as the bed knows it, its host replaced.
  local function named(node, host)
    local ci = node.conninfo:gsub("host=[^ ]+", "host=" .. host)
    return { name = node.name, conninfo = ci }
  end

  local function config(primary, replica1, replica2, extra)
    local view = { clusters = { main = { primary = primary, replicas = { replica1, replica2 } } } }
    local path = E.write_config(view, { log_level = "debug", extra = extra or [[
      pool = { min = 2, max = 8, connect_timeout = 5, reconnect_min = 0.1, reconnect_max = 0.5 },
    ]] })
    paths[#paths + 1] = path
    return path
  end

  local function start(...)
    local e, err = E.new(config(...))
    assert(e, err)
    eng = e
    return e
  end

  local function logged(e, text)
    for _, l in ipairs(e.logs) do
      if l.message:find(text, 1, true) then return true end
    end
    return false
  end

  local function tally(replies)
    return E.tally(replies, ports)
  end

  it("serves reads and writes through nodes named host=localhost", function()
    local e = start(named(c.primary, "localhost"), named(c.replicas[1], "localhost"),
      named(c.replicas[2], "localhost"))
    local reads = tally(e:query_many(100, 8, function() return WHO end))
    assert.are.equal(0, reads.failed, reads.why)
    assert.are.equal(0, reads.primary, reads.why)
    assert.is_true(reads.replica1 > 0 and reads.replica2 > 0, reads.why)
    local writes = e:query_many(20, 4, function(i)
      return "INSERT INTO dns_items (v) VALUES ($1) RETURNING inet_server_port()", { "w" .. i }
    end)
    local w = tally(writes)
    assert.are.equal(0, w.failed, w.why)
    assert.are.equal(20, w.primary, w.why)
    -- The engine resolved the name itself (libpq was given the address).
    assert.is_true(logged(e, 'host "localhost" is 127.0.0.1'), "no resolution was logged")
    -- Each server sees the engine's connections (pool and health poller).
    for _, node in ipairs({ c.primary, c.replicas[1], c.replicas[2] }) do
      local n = tonumber(bed:psql(node,
        "SELECT count(*) FROM pg_stat_activity WHERE application_name LIKE 'switchyard%'"))
      assert.is_true(n >= 2, ("%s sees %d switchyard connections"):format(node.name, n))
    end
    for name, st in pairs(e:node_stats()) do
      assert.is_true(st.healthy, name .. " is not healthy")
    end
    bed:psql(c.primary, "DELETE FROM dns_items")
  end)

  it("reports a replica whose host does not resolve as down and keeps serving", function()
    local e = start(c.primary, c.replicas[1], named(c.replicas[2], BAD_HOST))
    local down
    assert.is_true(e:run_until(function()
      for _, ev in ipairs(e:events_of("node_down")) do
        if ev.node == "main.replica2" then down = ev end
      end
      return down ~= nil
    end, 15), "no node_down event for main.replica2:\n" .. e:event_log())
    -- The message names the host and the resolver's reason.
    local pattern = 'could not resolve host "' .. BAD_HOST:gsub("%p", "%%%0") .. '": %S'
    assert.is_truthy(down.message:find(pattern), down.message)
    assert.is_false(e:node_stats()["main.replica2"].healthy)

    local t0 = cluster.now()
    local reads = tally(e:query_many(200, 8, function() return WHO end))
    local elapsed = cluster.now() - t0
    assert.are.equal(0, reads.failed, reads.why)
    assert.are.equal(200, reads.replica1, reads.why)
    assert.is_true(elapsed < 5, ("200 reads took %.2f s"):format(elapsed))
    local w = e:query("INSERT INTO dns_items (v) VALUES ('x') RETURNING inet_server_port()")
    assert.is_true(w.ok, w.message)
    assert.are.equal("primary", ports[w.value])
    bed:psql(c.primary, "DELETE FROM dns_items")

    -- The pool and the poller keep trying (with backoff) and keep failing
    -- the same way, without stalling anything.
    e:run_for(1.5)
    assert.is_false(e:node_stats()["main.replica2"].healthy)
    assert.is_true(logged(e, 'main.replica2: connect failed: could not resolve host "' .. BAD_HOST),
      "the pool never logged the failed lookup")
  end)

  it("skips a host of a multi-host list that does not resolve", function()
    local p = c.primary
    local port = p.conninfo:match("port=(%d+)")
    local multi = {
      name = p.name,
      conninfo = p.conninfo:gsub("host=[^ ]+", "host=" .. BAD_HOST .. ",localhost")
                           :gsub("port=%d+", ("port=%s,%s"):format(port, port)),
    }
    local e = start(multi, c.replicas[1], c.replicas[2])
    local w = e:query("INSERT INTO dns_items (v) VALUES ('multi') RETURNING inet_server_port()")
    assert.is_true(w.ok, w.message)
    assert.are.equal("primary", ports[w.value])
    assert.is_true(e:node_stats()["main.primary"].healthy)
    assert.is_true(logged(e, 'could not resolve host "' .. BAD_HOST), "the failed entry was not logged")
    bed:psql(c.primary, "DELETE FROM dns_items")
  end)

  it("frees an engine safely while lookups may still run", function()
    local path = config(named(c.primary, "localhost"), named(c.replicas[1], "localhost"),
      named(c.replicas[2], BAD_HOST))
    for i = 1, 60 do
      local e = assert(E.new(path))
      -- Free at once, or after a few turns: lookups are queued, running,
      -- done but not yet delivered, or delivered.
      for _ = 1, i % 4 do
        ev_run_nowait(e)
      end
      e:close()
    end
    -- Lookups cut loose from their engines finish on glibc's threads now;
    -- a notification touching freed memory would crash (or, under the
    -- sanitizers, abort) this process.
    ffi.C.usleep(300000)
    local e = start(named(c.primary, "localhost"), c.replicas[1], c.replicas[2])
    local w = e:query(WHO .. " /* sy: route=primary */")
    assert.is_true(w.ok, w.message)
    assert.are.equal("primary", ports[w.value])
  end)
end)

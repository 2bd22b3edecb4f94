-- Specs of the test bed itself (spec/support/cluster.lua and delay_relay):
-- real servers, real replication, real processes.  Timing assertions are
-- lower bounds only.
-- luacheck: std +busted
local cluster = require("support.cluster")

local function seen_at(bed, node, sql)
  local ok, out = bed:try_psql(node, sql)
  return ok and out == "1"
end

describe("test bed", function()
  local bed, main

  setup(function()
    bed = cluster.start({
      clusters = {
        { name = "main", replicas = 2,
          settings = { max_connections = 120 },
          replica_settings = { [2] = { recovery_min_apply_delay = "500ms" } } },
      },
    })
    main = bed.clusters.main
  end)

  teardown(function()
    if bed then bed:teardown() end
  end)

  it("describes a primary and two streaming replicas", function()
    assert.equal(3, #bed.nodes)
    assert.equal("primary", main.primary.name)
    assert.equal("replica1", main.replicas[1].name)
    assert.equal("replica2", main.replicas[2].name)
    local ports = {}
    for _, n in ipairs(bed.nodes) do
      assert.equal("127.0.0.1", n.host)
      assert.is_number(n.port)
      assert.is_nil(ports[n.port])
      ports[n.port] = true
      assert.equal(string.format("host=127.0.0.1 port=%d dbname=postgres user=postgres connect_timeout=5", n.port),
        n.conninfo)
      assert.truthy(n.datadir:find(bed.dir, 1, true))
    end
    assert.equal("f", bed:psql(main.primary, "SELECT pg_is_in_recovery()"))
    assert.equal("t", bed:psql(main.replicas[1], "SELECT pg_is_in_recovery()"))
    assert.equal("t", bed:psql(main.replicas[2], "SELECT pg_is_in_recovery()"))
    local streaming = bed:psql(main.primary,
      "SELECT count(*) FROM pg_stat_replication WHERE state = 'streaming'")
    assert.equal("2", streaming)
  end)

  it("applies the fast settings, cluster settings and replica settings", function()
    for _, n in ipairs(bed.nodes) do
      assert.equal("off", bed:psql(n, "SHOW fsync"))
      assert.equal("120", bed:psql(n, "SHOW max_connections"))
    end
    assert.equal("0", bed:psql(main.replicas[1], "SHOW recovery_min_apply_delay"))
    assert.equal("500ms", bed:psql(main.replicas[2], "SHOW recovery_min_apply_delay"))
  end)

  it("raises psql errors with the server's message", function()
    local ok, err = pcall(bed.psql, bed, main.primary, "SELECT nope")
    assert.is_false(ok)
    assert.truthy(tostring(err):find('column "nope" does not exist', 1, true))
    local good, out, stderr = bed:try_psql(main.primary, "SELECT 1/0")
    assert.is_false(good)
    assert.equal("", out)
    assert.truthy(stderr:find("division by zero", 1, true))
  end)

  it("replicates a write to both replicas, the delayed one later", function()
    bed:psql(main.primary, "CREATE TABLE bed_t (id int PRIMARY KEY)")
    local t0 = cluster.now()
    bed:psql(main.primary, "INSERT INTO bed_t VALUES (1)")
    local sql = "SELECT count(*) FROM bed_t WHERE id = 1"
    local seen = {}
    cluster.wait_for(function()
      for i, r in ipairs(main.replicas) do
        if not seen[i] and seen_at(bed, r, sql) then seen[i] = cluster.now() end
      end
      return seen[1] and seen[2]
    end, 20, "the row on both replicas", 0.02)
    -- The commit happened after t0; replica2 may apply it only 500 ms later.
    assert.is_true(seen[2] - t0 >= 0.49, "delayed replica saw the row after " .. (seen[2] - t0) .. "s")
    assert.is_true(seen[1] < seen[2], "the undelayed replica saw the row first")
  end)

  it("stops, starts and kills nodes", function()
    local r1 = main.replicas[1]
    bed:stop_node(r1)
    assert.is_false((bed:try_psql(r1, "SELECT 1")))
    bed:start_node(r1)
    assert.equal("1", bed:psql(r1, "SELECT 1"))

    bed:kill_node(main.primary)
    assert.is_false((bed:try_psql(main.primary, "SELECT 1")))
    assert.is_nil(bed:postmaster_pid(main.primary))
    bed:start_node(main.primary)
    bed:psql(main.primary, "INSERT INTO bed_t VALUES (2)")
    bed:wait_replicas_streaming("main")
    bed:wait_replayed(r1)
    assert.equal("2", bed:psql(r1, "SELECT count(*) FROM bed_t"))
  end)

  it("relays through a delay in both directions", function()
    local relay = bed:start_relay(main.primary, 100)
    assert.is_number(relay.port)
    assert.are_not.equal(main.primary.port, relay.port)
    -- psql's own \timing measures only the query's round trip.
    local out = bed:psql(relay, "\\timing on\nSELECT 1")
    local value, ms = out:match("^(%d+)\nTime: ([%d.]+) ms")
    assert.equal("1", value)
    assert.is_true(tonumber(ms) >= 190, "round trip through a 100 ms relay took " .. ms .. " ms")
    relay.stop()
    assert.is_false(cluster.pid_alive(relay.pid))
    assert.is_false((bed:try_psql(relay, "SELECT 1")))
  end)

  it("tears a bed down completely, once or twice", function()
    local small = cluster.start({ clusters = { { name = "solo", replicas = 0 } } })
    assert.equal("1", small:psql(small.clusters.solo.primary, "SELECT 1"))
    assert.is_true(#small:processes() > 0)
    small:teardown()
    assert.same({}, small:processes())
    assert.is_nil(io.open(small.dir .. "/solo-primary/PG_VERSION"))
    small:teardown()
  end)

  it("cleans up after a process that was killed with its bed running", function()
    local root = cluster.repo_root()
    local out = os.tmpname()
    local script = table.concat({
      "package.path = " .. string.format("%q", root .. "/spec/?.lua;") .. " .. package.path",
      "local cluster = require('support.cluster')",
      "local b = cluster.start({ clusters = { { name = 'doomed', replicas = 1 } } })",
      "local r = b:start_relay(b.nodes[1], 10)",
      "io.write('BED ', b.tag, ' ', b.dir, ' ', r.pid, '\\n') io.flush()",
      -- Never outlive the spec, whatever happens to it.
      "while cluster.pid_alive(" .. cluster.pid() .. ") do cluster.sleep(0.2) end",
    }, "\n")
    local code, pid = cluster.run("luajit -e " .. cluster.quote(script) .. " >" .. cluster.quote(out)
      .. " 2>&1 </dev/null & echo $!")
    assert.equal(0, code)
    pid = assert(tonumber(pid))
    finally(function()
      os.execute("kill -9 " .. pid .. " 2>/dev/null")
      os.remove(out)
    end)
    local ok, line = pcall(cluster.wait_for, function()
      return (cluster.read_file(out) or ""):match("BED (%S+ %S+ %d+)\n")
    end, 60, "the child's bed")
    assert(ok, tostring(line) .. "\n" .. (cluster.read_file(out) or ""))
    local tag, dir, relay_pid = line:match("^(%S+) (%S+) (%d+)$")
    assert.is_true(#cluster.processes_of(tag) > 0)
    os.execute("kill -9 " .. pid)
    cluster.wait_for(function()
      return #cluster.processes_of(tag) == 0 and not cluster.pid_alive(relay_pid)
        and io.open(dir) == nil
    end, 15, "the reaper to clean up after the killed process")
  end)
end)

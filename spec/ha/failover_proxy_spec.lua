-- Managed failover through the proxy: psycopg2 writes one row per statement
-- while the primary is killed with SIGKILL.  Statements that reach the
-- proxy after the failover began wait for the new primary instead of
-- failing (the proxy parks the batch); every acknowledged row is on the new
-- primary.  Commits wait for one standby, as in failover_spec.lua.
local cluster = require("support.cluster")
local E = require("support.engine")
local proxy = require("support.proxy")

describe("managed failover through the proxy", function()
  local bed, c, ports, px

  setup(function()
    bed = cluster.start({ clusters = { { name = "main", replicas = 2,
      settings = cluster.SYNCHRONOUS } } })
    c = bed.clusters.main
    ports = E.port_names(bed, "main.")
    bed:psql(c.primary, "CREATE TABLE fo_proxy (v int PRIMARY KEY, port int)")
    bed:wait_replicas_streaming("main")
    px = proxy.start(bed, {
      cluster_extra = [[ failover = { mode = "managed", write_wait = 15 } ]],
      extra = "health = { interval = 0.25, timeout = 1, fall = 3, rise = 1 }, pool = { min = 1, max = 8 },",
    })
  end)

  teardown(function()
    if px then px.stop() end
    if bed then bed:teardown() end
  end)

  it("parks writes during the failover and runs them on the new primary", function()
    local writer = cluster.repo_root() .. "/spec/clients/failover_writer.py"
    local out_file = bed.dir .. "/writer.out"
    local w = bed:spawn(px.env() .. "/usr/bin/python3 " .. cluster.quote(writer) .. " 6", out_file)
    cluster.sleep(1.5)
    bed:kill_node(c.primary)
    cluster.wait_for(function() return not cluster.pid_alive(w.pid) end, 30, "the writer to finish")
    local f = assert(io.open(out_file))
    local text = f:read("*a")
    f:close()
    local acked, oks, fails, by_port, after_kill = {}, {}, {}, {}, 0
    for line in text:gmatch("[^\n]+") do
      local id, port = line:match("^ok (%d+) (%d+)")
      if id then
        acked[#acked + 1] = id
        oks[#oks + 1] = line
        local who = ports[port]
        by_port[who] = (by_port[who] or 0) + 1
        if who ~= "main.primary" then after_kill = after_kill + 1 end
      elseif line:match("^fail") then
        fails[#fails + 1] = line
      end
    end
    assert.is_true(#acked > 0, text .. px.log_text())
    assert.is_true(after_kill > 0,
      "no write ran on a new primary: " .. text:sub(-600) .. "\n" .. px.log_text():sub(-6000))
    -- Only statements already on the dying primary's connections may fail
    -- (a handful); the rest waited.  The proxy's log says what happened.
    assert.is_true(#fails <= 3, table.concat(fails, "\n") .. "\n" .. px.log_text():sub(-3000))
    local promoted = by_port["main.replica1"] and c.replicas[1] or c.replicas[2]
    local present = {}
    for v in bed:psql(promoted, "SELECT v FROM fo_proxy"):gmatch("%d+") do present[v] = true end
    local missing = {}
    for _, line in ipairs(oks) do
      local id = line:match("^ok (%d+)")
      if not present[id] then missing[#missing + 1] = line end
    end
    assert.are.equal(0, #missing, "acknowledged but missing on the new primary:\n"
      .. table.concat(missing, "\n", 1, math.min(#missing, 20)) .. "\n" .. px.log_text():sub(-3000))
    assert.matches("failover: .* promoted in", px.log_text())
  end)
end)

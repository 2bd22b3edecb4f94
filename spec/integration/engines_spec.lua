-- Two engines in one process keep nothing in common, on one loop or on
-- two; events reach the host's C callback and the policy's on_event hook.
local cluster = require("support.cluster")
local E = require("support.engine")

local function policy_to(node)
  return ([[
local sy = require("switchyard")
local policy = {}
function policy.route(q)
  if q.sql == "SELECT 'figures'" then
    local n = q.topology.by_name[%q]
    return nil, ("queries=%%d p50=%%g p95=%%g p99=%%g avg=%%g idle=%%d healthy=%%s rtt=%%s"):format(
      n.queries, n.latency_p50_ms, n.latency_p95_ms, n.latency_p99_ms, n.latency_ms, n.idle,
      tostring(n.healthy), tostring(n.rtt_ms)), "P0001"
  end
  if q.sql == "SELECT 'events'" then
    return nil, "events=" .. table.concat(sy.shared.events or {}, ","), "P0001"
  end
  if q.kind == "read" then return q.topology.by_name[%q] end
  return q.topology.clusters.main.primary
end
function policy.on_event(ev)
  sy.shared.events = sy.shared.events or {}
  table.insert(sy.shared.events, ev.type .. ":" .. tostring(ev.node))
end
return policy
]]):format(node, node)
end

describe("several engines and events", function()
  local bed, dir, ports

  local function config(name, target)
    local f = assert(io.open(dir .. "/" .. name .. "_policy.lua", "w"))
    f:write(policy_to(target))
    f:close()
    return E.write_config(bed, {
      path = dir .. "/" .. name .. ".lua",
      extra = ([[ policy = %q, pool = { min = 1, max = 4, reconnect_min = 0.05, reconnect_max = 0.2 },
                  health = { interval = 0.2, timeout = 1, fall = 2, rise = 1 }, ]]):format(name .. "_policy.lua"),
    })
  end

  setup(function()
    bed = cluster.start({ clusters = { { name = "main", replicas = 2 } } })
    ports = E.port_names(bed, "main.")
    dir = E.tmpdir()
  end)

  teardown(function()
    if bed then bed:teardown() end
    if dir then os.execute("rm -rf " .. dir) end
  end)

  it("runs two engines with different policies side by side", function()
    local a = assert(E.new(config("a", "main.replica1")))
    local b = assert(E.new(config("b", "main.replica2")))
    for _ = 1, 50 do
      local ra, rb
      assert.are.equal(0, a:submit("SELECT inet_server_port()", nil, function(r) ra = r end))
      assert.are.equal(0, b:submit("SELECT inet_server_port()", nil, function(r) rb = r end))
      assert.is_true(a:run_until(function() return ra ~= nil end, 10))
      assert.is_true(b:run_until(function() return rb ~= nil end, 10))
      assert.are.equal("main.replica1", ports[ra.value])
      assert.are.equal("main.replica2", ports[rb.value])
    end
    -- the policy reads the same live figures the C API reports
    local st = a:node_stats()["main.replica1"]
    local fig = a:query("SELECT 'figures'").message
    assert.matches("queries=" .. st.queries .. " ", fig)
    assert.matches(("p95=%g "):format(st.p95), fig, 1, true)
    assert.matches(("p99=%g "):format(st.p99), fig, 1, true)
    assert.matches("healthy=true", fig)
    assert.is_true(st.p50 > 0 and st.p50 <= st.p95 and st.p95 <= st.p99)
    -- reloading one leaves the other alone
    assert.are.equal(0, (a:reload()))
    assert.are.equal(1, a:engine_stats().reloads)
    assert.are.equal(0, b:engine_stats().reloads)
    assert.are.equal(50, b:node_stats()["main.replica2"].queries)
    a:close()
    -- b still serves after a is gone
    assert.are.equal("main.replica2", ports[b:query("SELECT inet_server_port()").value])
    b:close()
  end)

  it("delivers node_down and node_up to the C callback and to on_event", function()
    local eng = assert(E.new(config("ev", "main.replica1")))
    local replica = bed.clusters.main.replicas[2]
    assert.is_true(eng:query("SELECT 1").ok)
    bed:stop_node(replica, "immediate")
    assert.is_true(eng:run_until(function() return #eng:events_of("node_down") > 0 end, 15))
    local down = eng:events_of("node_down")[1]
    assert.are.equal("main.replica2", down.node)
    assert.are.equal("main", down.cluster)
    assert.is_false(eng:node_stats()["main.replica2"].healthy)
    bed:start_node(replica)
    assert.is_true(eng:run_until(function() return #eng:events_of("node_up") > 0 end, 30))
    assert.is_true(eng:node_stats()["main.replica2"].healthy)
    local r = eng:query("SELECT 'events'")
    assert.matches("node_down:main%.replica2", r.message)
    assert.matches("node_up:main%.replica2", r.message)
    eng:close()
  end)
end)

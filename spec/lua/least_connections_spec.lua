-- least_connections: the fewest queries in flight wins; ties rotate.
local fixture = require("support.policy_fixture")
local least = require("balancers.least_connections")

describe("balancers.least_connections", function()
  local idle, busy
  before_each(function()
    idle = fixture.node({ name = "main.idle", inflight = 0 })
    busy = fixture.node({ name = "main.busy", inflight = 12 })
  end)

  it("avoids the busy node", function()
    local counts = fixture.tally_picks(least, { busy, idle }, 1000)
    assert.same({ ["main.idle"] = 1000 }, counts)
  end)

  it("follows the load as it changes", function()
    local state = {}
    -- Simulate queries that stay in flight: each pick adds one to its node.
    for _ = 1, 24 do
      local n = least.pick({ busy, idle }, nil, state)
      n.inflight = n.inflight + 1
    end
    assert.equal(18, idle.inflight)
    assert.equal(18, busy.inflight)
  end)

  it("shares equally among equally loaded nodes", function()
    local c = fixture.node({ name = "main.c", inflight = 0 })
    local counts = fixture.tally_picks(least, { idle, c }, 1000)
    assert.same({ ["main.idle"] = 500, ["main.c"] = 500 }, counts)
  end)

  it("divides by weight when per_weight is set", function()
    local big = fixture.node({ name = "main.big", inflight = 6, weight = 4 })
    local small = fixture.node({ name = "main.small", inflight = 2, weight = 1 })
    assert.equal(small, least.pick({ big, small }, nil, {}, {}))
    assert.equal(big, least.pick({ big, small }, nil, {}, { per_weight = true }))
  end)

  it("checks its options", function()
    assert.has_no.errors(function() least.check({ per_weight = true }) end)
    assert.has_error(function() least.check({ per_weight = 1 }) end,
      "balancer_options.per_weight: expected true or false, got number")
    assert.has_error(function() least.check({ x = 1 }) end,
      "balancer_options.x: unknown option (least_connections takes: per_weight)")
  end)
end)

-- response_time: the lowest moving-average latency wins, untried nodes
-- get tried, and a little exploration rediscovers a node that recovered.
local fixture = require("support.policy_fixture")
local response_time = require("balancers.response_time")

describe("balancers.response_time", function()
  local fast, slow
  before_each(function()
    fast = fixture.node({ name = "main.fast", latency_ms = 2, queries = 100 })
    slow = fixture.node({ name = "main.slow", latency_ms = 40, queries = 100 })
  end)

  it("prefers the faster node", function()
    local counts = fixture.tally_picks(response_time, { slow, fast }, 1000, { explore_every = 0 })
    assert.same({ ["main.fast"] = 1000 }, counts)
  end)

  it("explores 1% by default so the slow node is still measured", function()
    local counts = fixture.tally_picks(response_time, { slow, fast }, 1000)
    assert.equal(5, counts["main.slow"])
    assert.equal(995, counts["main.fast"])
  end)

  it("switches when the other node gets faster", function()
    local state = {}
    local options = { explore_every = 10 }
    fixture.tally_picks(response_time, { slow, fast }, 50, options, state)
    slow.latency_ms = 1
    local counts = fixture.tally_picks(response_time, { slow, fast }, 100, options, state)
    assert.is_true(counts["main.slow"] >= 90)
  end)

  it("tries a node with no figures yet", function()
    local fresh = fixture.node({ name = "main.fresh", latency_ms = nil, queries = 0 })
    assert.equal(fresh, response_time.pick({ fast, fresh }, nil, {}, { explore_every = 0 }))
  end)

  it("shares equally among equally fast nodes", function()
    slow.latency_ms = 2
    local counts = fixture.tally_picks(response_time, { slow, fast }, 1000, { explore_every = 0 })
    assert.same({ ["main.fast"] = 500, ["main.slow"] = 500 }, counts)
  end)

  it("checks its options", function()
    assert.has_no.errors(function() response_time.check({ explore_every = 0 }) end)
    assert.has_error(function() response_time.check({ explore_every = 0.5 }) end,
      "balancer_options.explore_every: expected a non-negative integer, got 0.5")
    assert.has_error(function() response_time.check({ explore = 1 }) end,
      "balancer_options.explore: unknown option (response_time takes: explore_every)")
  end)
end)

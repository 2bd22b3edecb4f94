-- health_aware: a score from health, latency, errors, load and lag; nodes
-- under the threshold get nothing, the rest share by score.
local fixture = require("support.policy_fixture")
local health = require("balancers.health_aware")

describe("balancers.health_aware", function()
  local good, other
  before_each(function()
    good = fixture.node({ name = "main.good", latency_ms = 2, lag_ms = 0 })
    other = fixture.node({ name = "main.other", latency_ms = 2, lag_ms = 0 })
  end)

  it("scores an ideal node 100 and follows the documented formula", function()
    local ideal = fixture.node({ name = "main.ideal" })
    assert.equal(100, health.score(ideal))
    assert.near(50, health.score(fixture.node({ latency_ms = 100 })), 1e-9)
    assert.near(25, health.score(fixture.node({ lag_ms = 1000 })), 1e-9)
    assert.near(100 * 0.9 ^ 4, health.score(fixture.node({ error_rate = 0.1 })), 1e-9)
    assert.near(50, health.score(fixture.node({ inflight = 32 })), 1e-9)
    assert.near(25, health.score(fixture.node({ lag_bytes = 16777216 })), 1e-9)
    assert.equal(0, health.score(fixture.node({ healthy = false })))
    assert.equal(0, health.score(fixture.node({ error_rate = 1 })))
    assert.equal(0, health.score(fixture.node({ lag_ms = 600 }), { max_lag_ms = 500 }))
    assert.equal(100, health.score(fixture.node({ lag_ms = 5000 }), { lag_weight = 0 }))
  end)

  it("gives nothing to an unhealthy node", function()
    other.healthy = false
    local counts = fixture.tally_picks(health, { other, good }, 1000)
    assert.same({ ["main.good"] = 1000 }, counts)
  end)

  it("gives nothing to a lagging node", function()
    other.lag_ms = 5000
    local counts = fixture.tally_picks(health, { other, good }, 1000)
    assert.same({ ["main.good"] = 1000 }, counts)
  end)

  it("gives nothing to a node with many errors", function()
    other.error_rate = 0.3
    local counts = fixture.tally_picks(health, { other, good }, 1000)
    assert.same({ ["main.good"] = 1000 }, counts)
  end)

  it("shares between healthy nodes in proportion to their scores", function()
    local counts = fixture.tally_picks(health, { other, good }, 1000)
    assert.same({ ["main.good"] = 500, ["main.other"] = 500 }, counts)
    other.latency_ms = 100 -- score about half of good's
    counts = fixture.tally_picks(health, { other, good }, 3000)
    assert.is_true(math.abs(counts["main.good"] / counts["main.other"] - 1.96) < 0.05)
  end)

  it("honours a custom threshold and returns nil when nobody passes", function()
    other.latency_ms = 100
    assert.same({ ["main.good"] = 100 },
      fixture.tally_picks(health, { other, good }, 100, { threshold = 80 }))
    assert.same({ none = 10 },
      fixture.tally_picks(health, { other }, 10, { threshold = 80 }))
  end)

  it("checks its options", function()
    assert.has_no.errors(function()
      health.check({ threshold = 80, lag_weight = 3, max_lag_ms = false, latency_ref_ms = 20 })
    end)
    assert.has_error(function() health.check({ threshold = 120 }) end,
      "balancer_options.threshold: expected a number from 0 to 100, got 120")
    assert.has_error(function() health.check({ lag_ref_ms = 0 }) end,
      "balancer_options.lag_ref_ms: expected a positive number, got 0")
    assert.has_error(function() health.check({ error_weight = "x" }) end,
      "balancer_options.error_weight: expected a non-negative number, got x")
    assert.has_error(function() health.check({ threshhold = 1 }) end)
  end)
end)

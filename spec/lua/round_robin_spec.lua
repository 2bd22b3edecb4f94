-- round_robin: equal shares, a stable rotation when candidates change.
local fixture = require("support.policy_fixture")
local round_robin = require("balancers.round_robin")

describe("balancers.round_robin", function()
  local r1, r2, r3
  before_each(function()
    r1 = fixture.node({ name = "main.replica1" })
    r2 = fixture.node({ name = "main.replica2" })
    r3 = fixture.node({ name = "main.replica3" })
  end)

  it("splits 1000 reads over 2 replicas 500/500", function()
    local counts = fixture.tally_picks(round_robin, { r1, r2 }, 1000)
    assert.same({ ["main.replica1"] = 500, ["main.replica2"] = 500 }, counts)
  end)

  it("alternates strictly", function()
    local state, seen = {}, {}
    for i = 1, 6 do seen[i] = round_robin.pick({ r1, r2, r3 }, nil, state).name end
    assert.same({ "main.replica1", "main.replica2", "main.replica3",
                  "main.replica1", "main.replica2", "main.replica3" }, seen)
  end)

  it("keeps rotating when a candidate drops out and returns", function()
    local state = {}
    fixture.tally_picks(round_robin, { r1, r2, r3 }, 301, nil, state)
    local counts = fixture.tally_picks(round_robin, { r1, r3 }, 100, nil, state)
    assert.same({ ["main.replica1"] = 50, ["main.replica3"] = 50 }, counts)
    counts = fixture.tally_picks(round_robin, { r1, r2, r3 }, 300, nil, state)
    assert.same({ ["main.replica1"] = 100, ["main.replica2"] = 100, ["main.replica3"] = 100 }, counts)
  end)

  it("returns the only candidate, and nil for none", function()
    assert.equal(r1, round_robin.pick({ r1 }, nil, {}))
    assert.is_nil(round_robin.pick({}, nil, {}))
  end)

  it("refuses options", function()
    assert.has_no.errors(function() round_robin.check({}) end)
    assert.has_error(function() round_robin.check({ weights = {} }) end,
      "balancer_options.weights: unknown option (round_robin takes none)")
  end)
end)

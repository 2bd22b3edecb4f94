-- weighted: smooth weighted round robin, exact shares, interleaved.
local fixture = require("support.policy_fixture")
local weighted = require("balancers.weighted")

describe("balancers.weighted", function()
  local a, b
  before_each(function()
    a = fixture.node({ name = "main.a", weight = 3 })
    b = fixture.node({ name = "main.b", weight = 1 })
  end)

  it("gives 3:1 exactly over every 4 picks, interleaved", function()
    local state, seen = {}, {}
    for i = 1, 8 do seen[i] = weighted.pick({ a, b }, nil, state).node_name end
    assert.same({ "a", "a", "b", "a", "a", "a", "b", "a" }, seen)
  end)

  it("gives 750/250 over 1000 picks", function()
    local counts = fixture.tally_picks(weighted, { a, b }, 1000)
    assert.same({ ["main.a"] = 750, ["main.b"] = 250 }, counts)
  end)

  it("spreads 5:2:1 without bursts", function()
    local c = fixture.node({ name = "main.c", weight = 1 })
    a.weight, b.weight = 5, 2
    local state, run, longest = {}, 0, 0
    local last
    for _ = 1, 80 do
      local n = weighted.pick({ a, b, c }, nil, state)
      run = (n == last) and run + 1 or 1
      last = n
      if run > longest then longest = run end
    end
    local counts = fixture.tally_picks(weighted, { a, b, c }, 800, nil, state)
    assert.same({ ["main.a"] = 500, ["main.b"] = 200, ["main.c"] = 100 }, counts)
    assert.is_true(longest <= 2)
  end)

  it("takes weights from balancer_options, by full or short name", function()
    local options = { weights = { ["main.a"] = 1, b = 1 } }
    local counts = fixture.tally_picks(weighted, { a, b }, 100, options)
    assert.same({ ["main.a"] = 50, ["main.b"] = 50 }, counts)
  end)

  it("keeps its shares when a node leaves and comes back", function()
    local c = fixture.node({ name = "main.c", weight = 1 })
    local state = {}
    fixture.tally_picks(weighted, { a, b, c }, 10, nil, state)
    local counts = fixture.tally_picks(weighted, { a, b }, 400, nil, state)
    assert.is_true(math.abs(counts["main.a"] - 300) <= 2)
  end)

  it("checks its options", function()
    assert.has_no.errors(function() weighted.check({ weights = { x = 2 } }) end)
    assert.has_error(function() weighted.check({ weight = {} }) end,
      "balancer_options.weight: unknown option (weighted takes: weights)")
    assert.has_error(function() weighted.check({ weights = { x = 0 } }) end,
      'balancer_options.weights["x"]: expected a positive number, got 0')
    assert.has_error(function() weighted.check({ weights = 3 }) end,
      "balancer_options.weights: expected a map of node name -> positive number")
  end)
end)

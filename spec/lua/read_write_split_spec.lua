-- read_write_split: every kind of statement lands where it must, reads are
-- balanced, failures fall back cleanly, hints and retries are honoured.
local fixture = require("support.policy_fixture")
local resolve = require("switchyard.resolve")

local PRIMARY, R1, R2 = "main.primary", "main.replica1", "main.replica2"

local function target(bed, fields)
  local node, msg, state = bed:route(fields)
  if node == nil then return nil, msg, state end
  return node.name
end

describe("read_write_split", function()
  local bed
  before_each(function() bed = fixture.new() end)

  describe("sends", function()
    it("reads to the replicas, 500/500 over 1000", function()
      assert.same({ [R1] = 500, [R2] = 500 }, bed:tally(1000, { kind = "read" }))
    end)

    for _, kind in ipairs({ "write", "ddl", "session", "transaction", "unknown" }) do
      it(kind .. " statements to the primary", function()
        assert.same({ [PRIMARY] = 100 }, bed:tally(100, { kind = kind }))
      end)
    end

    for _, flag in ipairs({ "locking_read", "writable_cte", "write_function",
                            "temp_table", "advisory_lock" }) do
      it("reads flagged " .. flag .. " to the primary", function()
        assert.equal(PRIMARY, target(bed, { kind = "read", flags = { [flag] = true } }))
      end)
    end

    it("everything inside a transaction to the primary", function()
      assert.same({ [PRIMARY] = 50 }, bed:tally(50, { kind = "read", in_tx = true }))
      assert.equal(PRIMARY, target(bed, { kind = "transaction", in_tx = true,
        flags = { read_only_tx = true } }))
    end)

    it("BEGIN READ ONLY to a replica, plain BEGIN to the primary", function()
      local ro = { kind = "transaction", flags = { tx_begin = true, read_only_tx = true } }
      assert.same({ [R1] = 5, [R2] = 5 }, bed:tally(10, ro))
      assert.equal(PRIMARY, target(bed, { kind = "transaction", flags = { tx_begin = true } }))
    end)

    it("reads flagged only explain_analyze or multi to the replicas", function()
      assert.equal(R1, target(bed, { kind = "read", flags = { explain_analyze = true, multi = true } }))
    end)
  end)

  describe("when nodes fail", function()
    it("skips an unhealthy replica", function()
      bed:node(R1).healthy = false
      assert.same({ [R2] = 100 }, bed:tally(100, { kind = "read" }))
    end)

    it("falls back to the primary when no replica is healthy", function()
      bed:node(R1).healthy = false
      bed:node(R2).healthy = false
      assert.same({ [PRIMARY] = 100 }, bed:tally(100, { kind = "read" }))
    end)

    it("rejects reads instead when fallback_to_primary is false", function()
      bed = fixture.new({ options = { fallback_to_primary = false } })
      bed:node(R1).healthy = false
      bed:node(R2).healthy = false
      local node, msg, state = bed:route({ kind = "read" })
      assert.is_nil(node)
      assert.equal('switchyard: no healthy replica in cluster "main" for this read', msg)
      assert.equal("08006", state)
    end)

    it("rejects writes with 08006 when the primary is down", function()
      bed:node(PRIMARY).healthy = false
      local node, msg, state = bed:route({ kind = "write" })
      assert.is_nil(node)
      assert.equal('switchyard: primary main.primary of cluster "main" is down', msg)
      assert.equal("08006", state)
      assert.equal(R1, target(bed, { kind = "read" }))
    end)

    it("rejects writes when the cluster has no primary", function()
      local raw = fixture.raw_config()
      raw.clusters.main.nodes[1].role = "replica"
      bed = fixture.new({ raw = raw })
      local node, msg, state = bed:route({ kind = "write" })
      assert.is_nil(node)
      assert.equal('switchyard: cluster "main" has no primary to run this statement', msg)
      assert.equal("08006", state)
      bed:node("main.primary").healthy = false
      bed:node(R1).healthy = false
      bed:node(R2).healthy = false
      node, msg = bed:route({ kind = "read" })
      assert.is_nil(node)
      assert.truthy(msg:find("no primary", 1, true))
    end)
  end)

  describe("retries", function()
    it("never sends a retried read back to the node that failed", function()
      local failed = bed:node(R1)
      assert.same({ [R2] = 100 }, bed:tally(100, { kind = "read", retry = { failed = failed } }))
    end)

    it("use the primary when the failed node was the only healthy replica", function()
      bed:node(R2).healthy = false
      assert.equal(PRIMARY, target(bed, { kind = "read", retry = { failed = bed:node(R1) } }))
    end)

    it("are rejected when no other node is left", function()
      bed:node(R1).healthy = false
      bed:node(R2).healthy = false
      local node, msg, state = bed:route({ kind = "read", retry = { failed = bed:node(PRIMARY) } })
      assert.is_nil(node)
      assert.truthy(msg:find("retried read", 1, true))
      assert.equal("08006", state)
    end)
  end)

  describe("hints", function()
    it("route=primary forces the primary", function()
      assert.same({ [PRIMARY] = 20 }, bed:tally(20, { kind = "read", hints = { route = "primary" } }))
    end)

    it("node= pins a node", function()
      assert.same({ [R2] = 20 }, bed:tally(20, { kind = "read", hints = { node = R2 } }))
      assert.equal(PRIMARY, target(bed, { kind = "write", hints = { node = PRIMARY } }))
    end)

    it("node= refuses an unknown node, a down node and a write on a replica", function()
      local _, msg, state = bed:route({ kind = "read", hints = { node = "main.replica9" } })
      assert.equal("switchyard: hint node=main.replica9 names no node", msg)
      assert.equal("42704", state)
      bed:node(R1).healthy = false
      _, msg, state = bed:route({ kind = "read", hints = { node = R1 } })
      assert.equal("switchyard: hinted node main.replica1 is down", msg)
      assert.equal("08006", state)
      _, msg, state = bed:route({ kind = "write", hints = { node = R2 } })
      assert.equal("switchyard: hinted node main.replica2 is a replica and cannot run this statement", msg)
      assert.equal("25006", state)
    end)
  end)

  describe("balancer option", function()
    it("uses a built-in balancer by name", function()
      local raw = fixture.raw_config()
      raw.clusters.main.nodes[2].weight = 3
      bed = fixture.new({ raw = raw, options = { balancer = "weighted" } })
      assert.same({ [R1] = 750, [R2] = 250 }, bed:tally(1000, { kind = "read" }))
    end)

    it("passes balancer_options", function()
      bed = fixture.new({ options = { balancer = "weighted",
        balancer_options = { weights = { replica1 = 1, replica2 = 4 } } } })
      assert.same({ [R1] = 200, [R2] = 800 }, bed:tally(1000, { kind = "read" }))
    end)

    it("loads a balancer file relative to the config directory", function()
      local path = fixture.tempfile([[
        return { pick = function(candidates) return candidates[#candidates] end }
      ]], "_last.lua")
      local dir, file = path:match("^(.*)/([^/]*)$")
      bed = fixture.new({ config_dir = dir, options = { balancer = "./" .. file } })
      assert.same({ [R2] = 10 }, bed:tally(10, { kind = "read" }))
      os.remove(path)
    end)

    it("falls back to the primary when the balancer finds no replica good enough", function()
      bed = fixture.new({ options = { balancer = "health_aware" } })
      bed:node(R1).lag_ms = 10000
      bed:node(R2).error_rate = 0.5
      assert.same({ [PRIMARY] = 10 }, bed:tally(10, { kind = "read" }))
    end)

    it("refuses to load with an unknown balancer, a bad file or bad options", function()
      assert.has_error(function() fixture.new({ options = { balancer = "fastest" } }) end,
        'unknown balancer "fastest": there is no built-in policies/balancers/fastest.lua')
      local ok, err = pcall(fixture.new, { options = { balancer = "/nonexistent/lb.lua" } })
      assert.is_false(ok)
      assert.truthy(err:find("/nonexistent/lb.lua", 1, true))
      local nopick = fixture.tempfile("return {}", "_nopick.lua")
      ok, err = pcall(fixture.new, { options = { balancer = nopick } })
      assert.is_false(ok)
      assert.truthy(err:find("has no pick", 1, true))
      os.remove(nopick)
      assert.has_error(function()
        fixture.new({ options = { balancer = "least_connections", balancer_options = { per_weight = "y" } } })
      end, "balancer_options.per_weight: expected true or false, got string")
      assert.has_error(function() fixture.new({ options = { balancr = "weighted" } }) end,
        "policy_options.balancr: unknown option")
      assert.has_error(function() fixture.new({ options = { balancer = 3 } }) end,
        "policy_options.balancer: expected a balancer name or a path to a .lua file, got number")
    end)
  end)

  it("keeps the balancer's position across a reload through sy.shared", function()
    local shared = {}
    bed = fixture.new({ shared = shared })
    assert.equal(R1, target(bed, { kind = "read" }))
    bed = fixture.new({ shared = shared })
    assert.equal(R2, target(bed, { kind = "read" }))
    assert.is_table(shared["balancer:round_robin"]["main:replica"])
  end)

  it("allocates nothing per read, write or fallback", function()
    for _, balancer in ipairs({ "round_robin", "weighted", "least_connections",
                                "response_time", "health_aware" }) do
      resolve.clear_cache()
      bed = fixture.new({ options = { balancer = balancer } })
      local read, write = bed:q({ kind = "read" }), bed:q({ kind = "write" })
      local route = bed.policy.route
      local function run(n)
        for _ = 1, n do
          route(read)
          route(write)
        end
      end
      run(20000) -- warm up: state tables, JIT traces
      collectgarbage("collect")
      collectgarbage("stop")
      local before = collectgarbage("count")
      run(50000)
      local grown = collectgarbage("count") - before
      collectgarbage("restart")
      -- JIT trace compilation leaves a few KB; one small table per decision
      -- would be several MB.
      assert.is_true(grown < 64, balancer .. " allocated " .. grown .. " KB over 100000 decisions")
    end
  end)
end)

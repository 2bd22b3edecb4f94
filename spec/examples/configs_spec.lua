-- examples/configs: every example config passes `switchyard check`, and each
-- one really runs: an engine built from it (through the FFI) against real
-- servers routes reads and writes the way the config's comment promises.
-- Which server answered is asked of PostgreSQL (inet_server_port()).
local ffi = require("ffi")
local cluster = require("support.cluster")
local E = require("support.engine")

-- The configs read their ports from the environment, in this process (the
-- engine's Lua state) and in the `switchyard check` children alike.
pcall(ffi.cdef, "int setenv(const char *name, const char *value, int overwrite);")

local quote = cluster.quote
local CONFIGS = { "read_write_split", "weighted", "schema_routing", "health_aware", "high_availability" }

describe("examples/configs", function()
  local root = cluster.repo_root()
  local build = cluster.build_dir()
  local bed
  local by_port = {} -- "port" -> "cluster.node"

  local function config_path(name)
    return root .. "/examples/configs/" .. name .. ".lua"
  end

  setup(function()
    bed = cluster.start({ clusters = {
      { name = "main", replicas = 2 },
      { name = "billing", replicas = 1 },
    } })
    local main, billing = bed.clusters.main, bed.clusters.billing
    local env = {
      SY_PRIMARY_PORT = main.primary.port,
      SY_REPLICA1_PORT = main.replicas[1].port,
      SY_REPLICA2_PORT = main.replicas[2].port,
      SY_BILLING_PRIMARY_PORT = billing.primary.port,
      SY_BILLING_REPLICA1_PORT = billing.replicas[1].port,
      SY_HOST = "127.0.0.1",
      SWITCHYARD_HOME = root,
    }
    for k, v in pairs(env) do
      assert(ffi.C.setenv(k, tostring(v), 1) == 0)
    end
    for _, node in ipairs(bed.nodes) do
      by_port[tostring(node.port)] = node.cluster .. "." .. node.name
    end
    bed:psql(main.primary, "CREATE TABLE visits (id serial PRIMARY KEY, page text)")
    bed:psql(billing.primary, "CREATE SCHEMA billing; "
      .. "CREATE TABLE billing.invoices (id serial PRIMARY KEY, total numeric)")
    bed:wait_replayed("main")
    bed:wait_replayed("billing")
  end)

  teardown(function()
    if bed then bed:teardown() end
  end)

  for _, name in ipairs(CONFIGS) do
    it("passes `switchyard check`: " .. name .. ".lua", function()
      local code, out, err = cluster.run(quote(build .. "/switchyard") .. " check "
        .. quote(config_path(name)))
      assert.are.equal(0, code, err .. out)
      assert.matches(": ok %(", out)
    end)
  end

  -- Runs n copies of sql through an engine made from the config; returns
  -- the count per node that really answered, checked against reply.node.
  local function tally(eng, n, sql, params)
    local count = {}
    local replies = eng:query_many(n, 8, function() return sql, params end)
    for _, r in ipairs(replies) do
      assert.is_true(r.ok, r.message)
      local who = by_port[r.results[#r.results].rows[1][1]]
      assert.are.equal(who, r.node)
      count[who] = (count[who] or 0) + 1
    end
    return count
  end

  local function with_engine(name, fn)
    local eng, err = E.new(config_path(name), { home = root, log_level = 2 })
    assert(eng, err)
    local ok, failure = pcall(fn, eng)
    eng:close()
    if not ok then error(failure, 0) end
  end

  it("read_write_split.lua: reads 200/200 over the replicas, writes on the primary", function()
    with_engine("read_write_split", function(eng)
      assert.same({ ["main.replica1"] = 200, ["main.replica2"] = 200 },
        tally(eng, 400, "SELECT inet_server_port()"))
      assert.same({ ["main.primary"] = 20 }, tally(eng, 20,
        "INSERT INTO visits (page) VALUES ($1) RETURNING inet_server_port()", { "/home" }))
      assert.same({ ["main.primary"] = 5 },
        tally(eng, 5, "/* sy: route=primary */ SELECT inet_server_port()"))
    end)
  end)

  it("weighted.lua: reads split 3:1 by node weight", function()
    with_engine("weighted", function(eng)
      assert.same({ ["main.replica1"] = 300, ["main.replica2"] = 100 },
        tally(eng, 400, "SELECT inet_server_port()"))
    end)
  end)

  -- From a cold start, as an application meets it: the first reads wait
  -- for new connections, and that must not shut healthy replicas out.
  it("health_aware.lua: healthy replicas share the reads, the primary gets none", function()
    with_engine("health_aware", function(eng)
      local count = tally(eng, 400, "SELECT inet_server_port()")
      local why = {}
      for name, st in pairs(eng:node_stats()) do
        why[#why + 1] = ("%s: %d reads, latency_avg_ms %.1f, errors %d"):format(name,
          count[name] or 0, st.latency_avg_ms, st.errors)
      end
      table.sort(why)
      why = table.concat(why, "; ")
      assert.is_nil(count["main.primary"], why)
      assert.is_true((count["main.replica1"] or 0) >= 100, why)
      assert.is_true((count["main.replica2"] or 0) >= 100, why)
    end)
  end)

  it("high_availability.lua: roles found by polling; a session reads its own writes", function()
    with_engine("high_availability", function(eng)
      assert.is_true(eng:wait_polled())
      local roles = {}
      for name, st in pairs(eng:node_stats()) do
        if name:match("^main%.") then roles[name] = st.role end
      end
      assert.same({ ["main.primary"] = "primary", ["main.replica1"] = "replica",
        ["main.replica2"] = "replica" }, roles)
      -- No write yet: reads take the replicas.
      local count = tally(eng, 40, "SELECT inet_server_port()")
      assert.is_nil(count["main.primary"])
      local s = eng:session("app", "postgres", "example")
      for i = 1, 50 do
        assert.is_true(eng:query("INSERT INTO visits (page) VALUES ($1)", { "/ha" .. i }, s).ok)
        local r = eng:query("SELECT count(*) FROM visits WHERE page = $1", { "/ha" .. i }, s)
        assert.is_true(r.ok, r.message)
        assert.are.equal("1", r.results[#r.results].rows[1][1])
      end
    end)
  end)

  it("schema_routing.lua: the billing schema runs on the billing cluster", function()
    with_engine("schema_routing", function(eng)
      assert.same({ ["billing.replica1"] = 20 },
        tally(eng, 20, "SELECT inet_server_port(), count(*) FROM billing.invoices"))
      assert.same({ ["billing.primary"] = 10 }, tally(eng, 10,
        "INSERT INTO billing.invoices (total) VALUES ($1) RETURNING inet_server_port()", { "9.99" }))
      assert.same({ ["main.replica1"] = 10, ["main.replica2"] = 10 },
        tally(eng, 20, "SELECT inet_server_port(), count(*) FROM visits"))
      local r = eng:query("SELECT * FROM app.users u JOIN billing.invoices i ON i.id = u.id")
      assert.are.equal("0A000", r.sqlstate, r.message)
    end)
  end)
end)

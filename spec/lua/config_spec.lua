-- config.validate / config.load: good configs normalise with every default,
-- every kind of bad key is reported with its path, all at once.
local fixture = require("support.policy_fixture")
local config = require("switchyard.config")

local ROOT = fixture.root

local function base()
  return fixture.raw_config()
end

local function validate(raw, dir)
  return config.validate(raw, dir or ROOT, ROOT)
end

-- The error list of a config that must fail.
local function errors_of(raw, dir)
  local cfg, errs = validate(raw, dir)
  assert.is_nil(cfg)
  assert.is_table(errs)
  return errs
end

local function has_error(errs, wanted)
  for _, e in ipairs(errs) do
    if e == wanted then return true end
  end
  error("missing error:\n  " .. wanted .. "\ngot:\n  " .. table.concat(errs, "\n  "), 2)
end

local function has_error_matching(errs, pattern)
  for _, e in ipairs(errs) do
    if e:find(pattern) then return e end
  end
  error("no error matching " .. pattern .. "\ngot:\n  " .. table.concat(errs, "\n  "), 2)
end

local tmpdirs = {}
local function tmpdir()
  local path = os.tmpname()
  os.remove(path)
  assert(os.execute("mkdir -p '" .. path .. "'"))
  tmpdirs[#tmpdirs + 1] = path
  return path
end

local function write(path, text)
  local f = assert(io.open(path, "w"))
  f:write(text)
  f:close()
  return path
end

teardown(function()
  for _, d in ipairs(tmpdirs) do os.execute("rm -rf '" .. d .. "'") end
end)

describe("config.validate on a good config", function()
  it("fills every default", function()
    local cfg = assert(validate(base()))
    assert.same({ min = 1, max = 10, idle_timeout = 60, max_lifetime = 3600,
      acquire_timeout = 5, connect_timeout = 5, reconnect_min = 0.1, reconnect_max = 10 }, cfg.pool)
    assert.equal(0, cfg.query_timeout)
    assert.is_true(cfg.retry_reads)
    assert.same({}, cfg.write_functions)
    assert.same({ instructions = 1000000, ms = 50 }, cfg.route_budget)
    assert.equal("info", cfg.log_level)
    assert.is_true(cfg.watch)
    assert.equal("read_write_split", cfg.policy)
    assert.same({}, cfg.policy_options)
    assert.equal("main", cfg.default_cluster)
    assert.equal(ROOT, cfg.config_dir)
    assert.equal(ROOT, cfg.home)
  end)

  it("normalises clusters and nodes", function()
    local cfg = assert(validate(base()))
    assert.equal(1, #cfg.clusters)
    local main = cfg.clusters[1]
    assert.equal("main", main.name)
    assert.equal(main, cfg.cluster_by_name.main)
    assert.same({}, main.schemas)
    assert.same(cfg.pool, main.pool)
    assert.equal("primary", main.primary)
    assert.equal(3, #main.nodes)
    assert.same({ name = "replica1", full_name = "main.replica1", cluster = "main",
      conninfo = "host=127.0.0.1 port=5433", role = "replica", weight = 1, tags = {}, priority = 1 },
      main.nodes[2])
    assert.same({ mode = "none", write_wait = 5, promote_timeout = 30 }, main.failover)
  end)

  it("checks a cluster's failover settings and node priorities", function()
    local raw = base()
    raw.clusters.main.failover = { mode = "managed", write_wait = 2 }
    raw.clusters.main.nodes[2].priority = 0
    local cfg = assert(validate(raw))
    assert.same({ mode = "managed", write_wait = 2, promote_timeout = 30 }, cfg.clusters[1].failover)
    assert.equal(0, cfg.clusters[1].nodes[2].priority)
    raw.clusters.main.failover = { mode = "auto", write_wait = -1, after = 3 }
    raw.clusters.main.nodes[2].priority = 1.5
    local _, errs = validate(raw)
    has_error(errs, 'clusters.main.failover.mode: expected one of "none", "managed", "patroni", got string "auto"')
    has_error(errs, "clusters.main.failover.after: unknown key")
    has_error(errs, "clusters.main.nodes[2].priority: expected a non-negative integer, got number 1.5")
    has_error(errs, "clusters.main.failover.write_wait: expected a non-negative number, got number -1")
    assert.is_true(#errs >= 4)
  end)

  it("wants Patroni's REST API URLs with mode patroni, and only then", function()
    local raw = base()
    raw.clusters.main.failover = { mode = "patroni", patroni = { "http://10.0.0.1:8008", "https://pg2:8008/" } }
    local cfg = assert(validate(raw))
    assert.same({ "http://10.0.0.1:8008", "https://pg2:8008/" }, cfg.clusters[1].failover.patroni)
    raw.clusters.main.failover = { mode = "patroni", patroni = "http://10.0.0.1:8008" }
    assert.same({ "http://10.0.0.1:8008" }, assert(validate(raw)).clusters[1].failover.patroni)
    raw.clusters.main.failover = { mode = "patroni" }
    local _, errs = validate(raw)
    has_error(errs, 'clusters.main.failover.patroni: expected Patroni REST API URLs '
      .. '(an array of "http://host:8008"), got nil')
    raw.clusters.main.failover = { mode = "patroni", patroni = {} }
    _, errs = validate(raw)
    has_error(errs, "clusters.main.failover.patroni: expected at least one Patroni REST API URL")
    raw.clusters.main.failover = { mode = "patroni", patroni = { "ftp://x", "http://h:1/cluster", 3 } }
    _, errs = validate(raw)
    has_error(errs, 'clusters.main.failover.patroni[1]: expected a URL like "http://host:8008", got string "ftp://x"')
    has_error(errs, 'clusters.main.failover.patroni[2]: expected a URL like "http://host:8008", '
      .. 'got string "http://h:1/cluster"')
    has_error(errs, 'clusters.main.failover.patroni[3]: expected a URL like "http://host:8008", got number 3')
    raw.clusters.main.failover = { mode = "managed", patroni = { "http://h:1" } }
    _, errs = validate(raw)
    has_error(errs, 'clusters.main.failover.patroni: only with mode = "patroni"')
  end)

  it("sorts clusters by name, merges pool overrides, maps schemas to owners", function()
    local cfg = assert(validate({
      clusters = {
        users = { nodes = { { name = "p", conninfo = "x", role = "primary" } },
                  schemas = { "Users", "auth" }, pool = { max = 50 } },
        commerce = { nodes = { { name = "p", conninfo = "y", role = "primary",
                                 tags = { region = "eu", rack = 3, ssd = true } } },
                     schemas = { "orders" } },
      },
      default_cluster = "users",
      pool = { min = 2 },
    }))
    assert.equal("commerce", cfg.clusters[1].name)
    assert.equal("users", cfg.clusters[2].name)
    assert.equal(2, cfg.cluster_by_name.users.pool.min)
    assert.equal(50, cfg.cluster_by_name.users.pool.max)
    assert.equal(10, cfg.cluster_by_name.commerce.pool.max)
    assert.same({ "users", "auth" }, cfg.cluster_by_name.users.schemas)
    assert.same({ users = "users", auth = "users", orders = "commerce" }, cfg.schema_owner)
    assert.same({ region = "eu", rack = 3, ssd = true }, cfg.clusters[1].nodes[1].tags)
  end)

  it("accepts weights and every top-level key; role auto, or none, for discovered roles", function()
    local auto = base()
    auto.clusters.main.nodes[2].role = "auto"
    auto.clusters.main.nodes[1].role = nil
    local acfg = assert(validate(auto))
    assert.equal("auto", acfg.clusters[1].nodes[1].role)
    assert.equal("auto", acfg.clusters[1].nodes[2].role)
    assert.is_nil(acfg.clusters[1].primary)
    local raw = base()
    raw.clusters.main.nodes[2].weight = 3
    raw.query_timeout = 2.5
    raw.retry_reads = false
    raw.watch = false
    raw.write_functions = { "my_func", "audit.log_event" }
    raw.route_budget = { ms = 10 }
    raw.log_level = "debug"
    raw.policy_options = { balancer = "weighted" }
    local cfg = assert(validate(raw))
    assert.equal("replica", cfg.clusters[1].nodes[2].role)
    assert.equal(3, cfg.clusters[1].nodes[2].weight)
    assert.equal(2.5, cfg.query_timeout)
    assert.is_false(cfg.retry_reads)
    assert.is_false(cfg.watch)
    assert.same({ "my_func", "audit.log_event" }, cfg.write_functions)
    assert.same({ instructions = 1000000, ms = 10 }, cfg.route_budget)
    assert.equal("debug", cfg.log_level)
    assert.same({ balancer = "weighted" }, cfg.policy_options)
  end)

  it("allows a cluster with no primary and pool min = 0", function()
    local cfg = assert(validate({
      clusters = { ro = { nodes = { { name = "r", conninfo = "x", role = "replica" } } } },
      pool = { min = 0, max = 1 },
    }))
    assert.is_nil(cfg.clusters[1].primary)
    assert.equal(0, cfg.pool.min)
  end)

  it("does not modify the raw table", function()
    local raw = base()
    validate(raw)
    assert.same(base(), raw)
  end)
end)

describe("config.validate reports", function()
  it("a non-table config", function()
    local cfg, errs = validate("nope")
    assert.is_nil(cfg)
    assert.same({ 'config: expected a table, got string "nope"' }, errs)
  end)

  it("unknown keys at every level, with a suggestion for near misses", function()
    local raw = base()
    raw.colour = "blue"
    raw.clusters.main.nodes[1].colour = "red"
    raw.clusters.main.nodes[2].wieght = 2
    raw.clusters.main.shemas = { "x" }
    raw.pool = { maxx = 3 }
    raw.route_budget = { seconds = 1 }
    local errs = errors_of(raw)
    has_error(errs, "colour: unknown key")
    has_error(errs, "clusters.main.nodes[1].colour: unknown key")
    has_error(errs, 'clusters.main.nodes[2].wieght: unknown key (did you mean "weight"?)')
    has_error(errs, 'clusters.main.shemas: unknown key (did you mean "schemas"?)')
    has_error(errs, 'pool.maxx: unknown key (did you mean "max"?)')
    has_error(errs, "route_budget.seconds: unknown key")
    assert.equal(6, #errs)
  end)

  it("a bad weight with the exact message", function()
    local raw = base()
    raw.clusters.main.nodes[2].weight = "x"
    raw.clusters.main.nodes[3].weight = 1.5
    raw.clusters.main.nodes[1].weight = 0
    local errs = errors_of(raw)
    has_error(errs, 'clusters.main.nodes[2].weight: expected a positive integer, got string "x"')
    has_error(errs, "clusters.main.nodes[3].weight: expected a positive integer, got number 1.5")
    has_error(errs, "clusters.main.nodes[1].weight: expected a positive integer, got number 0")
  end)

  it("every node problem", function()
    local errs = errors_of({
      clusters = {
        main = {
          nodes = {
            { name = "p", conninfo = "x", role = "primary" },
            { name = "p", conninfo = "", role = "master" },
            { name = "bad name", role = "primary", tags = { region = {} } },
            { conninfo = "x", role = "primary" },
            "node",
          },
        },
      },
    })
    has_error(errs, 'clusters.main.nodes[2].name: duplicate node name "p" (also nodes[1])')
    has_error(errs, "clusters.main.nodes[2].conninfo: expected a non-empty libpq connection string, "
      .. 'got string ""')
    has_error(errs, 'clusters.main.nodes[2].role: expected "primary", "replica" or "auto", got string "master"')
    has_error(errs, "clusters.main.nodes[3].name: expected a node name (letters, digits, _ and -), "
      .. 'got string "bad name"')
    has_error(errs, "clusters.main.nodes[3].conninfo: required (a libpq connection string)")
    has_error(errs, "clusters.main.nodes[3].role: a cluster has at most one primary (nodes[1] is one)")
    has_error(errs, "clusters.main.nodes[3].tags.region: expected a string, number or boolean, got table")
    has_error(errs, "clusters.main.nodes[4].name: required (a node name: letters, digits, _ and -)")
    has_error(errs, "clusters.main.nodes[4].role: a cluster has at most one primary (nodes[1] is one)")
    has_error(errs, 'clusters.main.nodes[5]: expected a node table, got string "node"')
    assert.equal(10, #errs)
  end)

  it("a missing role (auto) and bad tags", function()
    local errs = errors_of({ clusters = { main = { nodes = {
      { name = "a", conninfo = "x", tags = "eu" },
      { name = "b", conninfo = "x", role = "replica", tags = { [1] = "x" } },
    } } } })
    assert.equal(2, #errs)
    has_error(errs, "clusters.main.nodes[1].tags: expected a map of tag name -> string, number or boolean, "
      .. 'got string "eu"')
    has_error(errs, "clusters.main.nodes[2].tags[1]: tag names must be non-empty strings")
  end)

  it("bad clusters and node lists", function()
    has_error(errors_of({}), "clusters: required (a map of cluster name -> cluster)")
    has_error(errors_of({ clusters = "main" }),
      'clusters: expected a map of cluster name -> cluster, got string "main"')
    has_error(errors_of({ clusters = {} }), "clusters: expected at least one cluster")
    local errs = errors_of({ clusters = {
      ["bad-name"] = { nodes = { { name = "p", conninfo = "x", role = "primary" } } },
      a = { nodes = {} },
      b = {},
      c = { nodes = { x = 1 } },
      d = "cluster",
      e = { nodes = "p" },
    }, default_cluster = "a" })
    has_error(errs, 'clusters["bad-name"]: invalid cluster name (expected letters, digits and _)')
    has_error(errs, "clusters.a.nodes: expected at least one node")
    has_error(errs, "clusters.b.nodes: required (an array of at least one node)")
    has_error(errs, "clusters.c.nodes: expected an array of nodes, got a table with non-array keys")
    has_error(errs, 'clusters.d: expected a cluster table, got string "cluster"')
    has_error(errs, 'clusters.e.nodes: expected an array of nodes, got string "p"')
    assert.equal(6, #errs)
  end)

  it("schemas: type, duplicates and ownership by two clusters", function()
    local errs = errors_of({
      clusters = {
        a = { nodes = { { name = "p", conninfo = "x", role = "primary" } },
              schemas = { "sales", "SALES", 3 } },
        b = { nodes = { { name = "p", conninfo = "x", role = "primary" } },
              schemas = { "Sales" } },
        c = { nodes = { { name = "p", conninfo = "x", role = "primary" } },
              schemas = "sales" },
      },
      default_cluster = "a",
    })
    has_error(errs, 'clusters.a.schemas[2]: duplicate schema "sales"')
    has_error(errs, "clusters.a.schemas[3]: expected a schema name, got number 3")
    has_error(errs, 'clusters.b.schemas[1]: schema "sales" is already owned by cluster "a"')
    has_error(errs, 'clusters.c.schemas: expected an array of schema names, got string "sales"')
    assert.equal(4, #errs)
  end)

  it("default_cluster missing, unknown or mistyped", function()
    local two = {
      a = { nodes = { { name = "p", conninfo = "x", role = "primary" } } },
      b = { nodes = { { name = "p", conninfo = "x", role = "primary" } } },
    }
    has_error(errors_of({ clusters = two }),
      "default_cluster: required when there is more than one cluster (one of: a, b)")
    has_error(errors_of({ clusters = two, default_cluster = "c" }),
      'default_cluster: no cluster named "c" (clusters: a, b)')
    has_error(errors_of({ clusters = two, default_cluster = 1 }),
      "default_cluster: expected a cluster name, got number 1")
  end)

  it("pool ranges, integer-ness and relations", function()
    local raw = base()
    raw.pool = { min = -1, max = 0, idle_timeout = "60", max_lifetime = 1 / 0,
                 acquire_timeout = 0, connect_timeout = -1, reconnect_min = 0 / 0 }
    local errs = errors_of(raw)
    has_error(errs, "pool.min: expected a non-negative integer, got number -1")
    has_error(errs, "pool.max: expected a positive integer, got number 0")
    has_error(errs, 'pool.idle_timeout: expected a non-negative number, got string "60"')
    has_error(errs, "pool.max_lifetime: expected a non-negative number, got number inf")
    has_error(errs, "pool.acquire_timeout: expected a positive number, got number 0")
    has_error(errs, "pool.connect_timeout: expected a positive number, got number -1")
    has_error_matching(errs, "^pool%.reconnect_min: expected a positive number, got number %-?nan")
    assert.equal(7, #errs)

    raw.pool = { min = 20, max = 10, reconnect_min = 5, reconnect_max = 1 }
    errs = errors_of(raw)
    has_error(errs, "pool.min: expected at most max (10), got number 20")
    has_error(errs, "pool.reconnect_min: expected at most reconnect_max (1), got number 5")
    assert.equal(2, #errs)

    -- An invalid max is not used for the relation: min is compared with the default.
    raw.pool = { min = 3, max = 10.5 }
    assert.same({ "pool.max: expected a positive integer, got number 10.5" }, errors_of(raw))
  end)

  it("per-cluster pool overrides with their own path", function()
    local raw = base()
    raw.pool = { min = 5 }
    raw.clusters.main.pool = { max = 3, acquire_timeout = "soon" }
    local errs = errors_of(raw)
    has_error(errs, 'clusters.main.pool.acquire_timeout: expected a positive number, got string "soon"')
    has_error(errs, "clusters.main.pool.min: expected at most max (3), got number 5")
    assert.equal(2, #errs)
    raw.clusters.main.pool = 7
    has_error(errors_of(raw), "clusters.main.pool: expected a table, got number 7")
  end)

  it("scalar top-level keys", function()
    local raw = base()
    raw.query_timeout = -1
    raw.retry_reads = "yes"
    raw.watch = 1
    raw.write_functions = { "ok_fn", "MyFunc", 4 }
    raw.route_budget = { instructions = 0, ms = "x" }
    raw.log_level = "verbose"
    raw.policy_options = "fast"
    local errs = errors_of(raw)
    has_error(errs, "query_timeout: expected a non-negative number, got number -1")
    has_error(errs, 'retry_reads: expected true or false, got string "yes"')
    has_error(errs, "watch: expected true or false, got number 1")
    has_error(errs, 'write_functions[2]: expected a lowercase function name, got string "MyFunc"')
    has_error(errs, "write_functions[3]: expected a lowercase function name, got number 4")
    has_error(errs, "route_budget.instructions: expected a positive integer, got number 0")
    has_error(errs, 'route_budget.ms: expected a positive number, got string "x"')
    has_error(errs, 'log_level: expected one of debug, info, warn, error, got string "verbose"')
    has_error(errs, 'policy_options: expected a table, got string "fast"')
    assert.equal(9, #errs)
    raw = base()
    raw.write_functions = "f"
    raw.route_budget = 5
    errs = errors_of(raw)
    has_error(errs, 'write_functions: expected an array of lowercase function names, got string "f"')
    has_error(errs, "route_budget: expected a table, got number 5")
  end)

  it("collects problems from every part of the config at once", function()
    local raw = base()
    raw.clusters.main.nodes[2].weight = "x"
    raw.clusters.main.nodes[3].role = "leader"
    raw.pool = { max = -5 }
    raw.log_level = 3
    raw.policy = "no_such_policy"
    assert.equal(5, #errors_of(raw))
  end)
end)

describe("config.validate policy resolution", function()
  it("resolves a built-in name under home/policies", function()
    local raw = base()
    raw.policy = "schema_routing"
    local cfg = assert(validate(raw))
    assert.equal(ROOT .. "/policies/schema_routing.lua", cfg.policy_path)
    assert.equal(ROOT .. "/policies/read_write_split.lua", assert(validate(base())).policy_path)
  end)

  it("refuses an unknown built-in, naming where it looked", function()
    local raw = base()
    raw.policy = "nope"
    local errs = errors_of(raw)
    has_error(errs, ('policy: no built-in "nope" (looked for %s/policies/nope.lua)'):format(ROOT))
  end)

  it("resolves relative paths against config_dir", function()
    local dir = tmpdir()
    assert(os.execute("mkdir -p '" .. dir .. "/pol'"))
    write(dir .. "/mine.lua", "return {}")
    write(dir .. "/pol/other.lua", "return {}")
    local raw = base()
    raw.policy = "mine.lua"
    assert.equal(dir .. "/mine.lua", assert(validate(raw, dir)).policy_path)
    raw.policy = "./pol/../pol/other.lua"
    assert.equal(dir .. "/pol/other.lua", assert(validate(raw, dir)).policy_path)
    raw.policy = dir .. "/mine.lua"
    assert.equal(dir .. "/mine.lua", assert(validate(raw, "/")).policy_path)
    raw.policy = "missing.lua"
    has_error(errors_of(raw, dir), ("policy: file %s/missing.lua not found"):format(dir))
    raw.policy = "pol/"
    has_error(errors_of(raw, dir), ("policy: file %s/pol not found"):format(dir))
  end)

  it("refuses a policy that is neither a name nor a path", function()
    local raw = base()
    raw.policy = "my policy"
    has_error(errors_of(raw),
      'policy: "my policy" is neither a built-in name (letters, digits, _) nor a path to a .lua file')
    raw.policy = 42
    has_error(errors_of(raw),
      "policy: expected a built-in policy name or a path to a .lua file, got number 42")
  end)

  it("makes a relative config_dir absolute", function()
    local cfg = assert(config.validate(base(), ".", ROOT))
    assert.equal("/", cfg.config_dir:sub(1, 1))
  end)
end)

describe("config.load", function()
  it("loads a good file and resolves paths against its directory", function()
    local dir = tmpdir()
    write(dir .. "/p.lua", "return { route = function() end }")
    local path = write(dir .. "/switchyard.lua", [[
      local port = tonumber(os.getenv("SY_SPEC_UNSET_PORT") or "5432")
      local replicas = {}
      for i = 1, 2 do
        replicas[#replicas + 1] = { name = "r" .. i, conninfo = string.format("port=%d", port + i),
                                    role = "replica" }
      end
      table.insert(replicas, 1, { name = "p", conninfo = "port=" .. tostring(port), role = "primary" })
      return { clusters = { main = { nodes = replicas } }, policy = "p.lua",
               pool = { max = math.max(4, 2) } }
    ]])
    local cfg, errs = config.load(path, ROOT)
    assert.is_nil(errs)
    assert.equal(dir, cfg.config_dir)
    assert.equal(path, cfg.config_path)
    assert.equal(dir .. "/p.lua", cfg.policy_path)
    assert.equal("port=5434", cfg.clusters[1].nodes[3].conninfo)
    assert.equal(4, cfg.pool.max)
  end)

  it("reports a syntax error with file:line", function()
    local path = write(tmpdir() .. "/bad.lua", "return {\n  clusters = {\n    main = ,\n}\n")
    local cfg, errs = config.load(path, ROOT)
    assert.is_nil(cfg)
    assert.equal(1, #errs)
    assert.truthy(errs[1]:find(path .. ":3:", 1, true), errs[1])
  end)

  it("reports a runtime error with file:line", function()
    local path = write(tmpdir() .. "/boom.lua", "local x = nil\n\nreturn x.y\n")
    local _, errs = config.load(path, ROOT)
    assert.truthy(errs[1]:find(path .. ":3:", 1, true), errs[1])
  end)

  it("reports a missing file", function()
    local _, errs = config.load("/nonexistent/switchyard.lua", ROOT)
    assert.truthy(errs[1]:find("/nonexistent/switchyard.lua", 1, true))
  end)

  it("requires a table", function()
    local path = write(tmpdir() .. "/num.lua", "return 42\n")
    local _, errs = config.load(path, ROOT)
    assert.same({ path .. ": the config must return a table, got number 42" }, errs)
  end)

  it("runs the config in a sandbox: no io, no require, no leaked globals", function()
    local dir = tmpdir()
    local _, errs = config.load(write(dir .. "/io.lua", "\nio.write('x')\nreturn {}\n"), ROOT)
    assert.truthy(errs[1]:find(dir .. "/io.lua:2: unknown name \"io\"", 1, true), errs[1])
    _, errs = config.load(write(dir .. "/req.lua", "local x = require('os')\nreturn {}\n"), ROOT)
    assert.truthy(errs[1]:find(dir .. "/req.lua:1: unknown name \"require\"", 1, true), errs[1])
    -- A typo reads as an error, not as nil.
    _, errs = config.load(write(dir .. "/typo.lua", "return { retry_reads = tru }\n"), ROOT)
    assert.truthy(errs[1]:find('unknown name "tru"', 1, true), errs[1])

    local ok = config.load(write(dir .. "/leak.lua", [[
      leaked_by_config = 1
      string.format = nil
      local raw = { clusters = { main = { nodes = { { name = "p", conninfo = "x",
                    role = "primary" } } } } }
      raw.watch = leaked_by_config == 1
      return raw
    ]]), ROOT)
    assert.is_table(ok)
    assert.is_true(ok.watch)
    assert.is_nil(rawget(_G, "leaked_by_config"))
    assert.is_function(string.format)
  end)

  it("stops a config that never finishes", function()
    local path = write(tmpdir() .. "/loop.lua", "local i = 0\nwhile true do i = i + 1 end\n")
    local _, errs = config.load(path, ROOT)
    assert.truthy(errs[1]:find("instructions", 1, true), errs[1])
    assert.truthy(errs[1]:find(path .. ":2:", 1, true), errs[1])
  end)

  it("returns the validation errors of a well-formed file", function()
    local path = write(tmpdir() .. "/invalid.lua",
      "return { clusters = { main = { nodes = { { name = 'p', conninfo = 'x', role = 'boss' } } } } }")
    local cfg, errs = config.load(path, ROOT)
    assert.is_nil(cfg)
    assert.same({ 'clusters.main.nodes[1].role: expected "primary", "replica" or "auto", got string "boss"' },
      errs)
  end)
end)

describe("config.validate proxy section", function()
  -- A base config with a proxy section (nil: none).
  local function with_proxy(proxy)
    local raw = base()
    raw.proxy = proxy
    return raw
  end

  local DEFAULT_PROXY = {
    listen = { "127.0.0.1:6432", "[::1]:6432" },
    listeners = {
      { address = "127.0.0.1:6432", host = "127.0.0.1", port = 6432, ipv6 = false },
      { address = "[::1]:6432", host = "::1", port = 6432, ipv6 = true },
    },
    unix_socket_mode = "0777",
    max_clients = 1000, client_buffer = 65536, max_message = 16777216,
    pool_mode = "transaction",
    tls = { mode = "disable" },
    auth = { type = "trust" },
    timeouts = { client_idle = 0, wait_backend = 5, connect = 5, idle_in_transaction = 0,
                 client_login = 60 },
    admin = { database = "switchyard", users = {} },
    prepared_statements = { max_per_backend = 256 },
    shutdown = { drain_timeout = 30 },
    switchyard_variables = true,
  }

  it("is nil when absent, so embedded users see no change", function()
    local cfg = assert(validate(base()))
    assert.is_nil(cfg.proxy)
    assert.is_nil(config.defaults().proxy)
  end)

  it("fills every default for proxy = {}", function()
    local cfg = assert(validate(with_proxy({})))
    assert.same(DEFAULT_PROXY, cfg.proxy)
    -- proxy_defaults() is the same section minus the parsed listeners, as a fresh copy.
    local d = config.proxy_defaults()
    d.listeners = DEFAULT_PROXY.listeners
    assert.same(DEFAULT_PROXY, d)
    config.proxy_defaults().listen[1] = "changed"
    assert.equal("127.0.0.1:6432", assert(validate(with_proxy({}))).proxy.listen[1])
  end)

  it("normalises a full proxy config, resolving paths against config_dir", function()
    local dir = tmpdir()
    assert(os.execute("mkdir -p '" .. dir .. "/tls' '" .. dir .. "/run'"))
    write(dir .. "/tls/server.crt", "cert")
    write(dir .. "/tls/server.key", "key")
    write(dir .. "/tls/ca.crt", "ca")
    write(dir .. "/userlist.txt", '"alice" "md5abc"\n')
    local raw = with_proxy({
      listen = { "0.0.0.0:5000", "[fe80::1]:5001", "db.example.com:5002" },
      unix_socket_dir = "run",
      unix_socket_mode = "700",
      max_clients = 5000, client_buffer = 8192, max_message = 65536,
      pool_mode = "session",
      tls = { mode = "require", cert = "tls/server.crt", key = "./tls/server.key",
              ca = dir .. "/tls/ca.crt" },
      auth = { type = "scram-sha-256", file = "userlist.txt",
               query = "SELECT usename, passwd FROM pg_shadow WHERE usename = $1" },
      timeouts = { client_idle = 600, wait_backend = 0.5 },
      admin = { database = "sy_admin", users = { "ops", "alice" } },
      prepared_statements = { max_per_backend = 0 },
      shutdown = { drain_timeout = 2.5 },
      switchyard_variables = false,
    })
    local cfg = assert(validate(raw, dir))
    local p = cfg.proxy
    assert.same({ "0.0.0.0:5000", "[fe80::1]:5001", "db.example.com:5002" }, p.listen)
    assert.same({
      { address = "0.0.0.0:5000", host = "0.0.0.0", port = 5000, ipv6 = false },
      { address = "[fe80::1]:5001", host = "fe80::1", port = 5001, ipv6 = true },
      { address = "db.example.com:5002", host = "db.example.com", port = 5002, ipv6 = false },
    }, p.listeners)
    assert.equal(dir .. "/run", p.unix_socket_dir)
    assert.equal(dir .. "/run/.s.PGSQL.5000", p.unix_socket_path)
    assert.equal("700", p.unix_socket_mode)
    assert.equal(5000, p.max_clients)
    assert.equal(8192, p.client_buffer)
    assert.equal(65536, p.max_message)
    assert.equal("session", p.pool_mode)
    assert.same({ mode = "require", cert = dir .. "/tls/server.crt", key = dir .. "/tls/server.key",
                  ca = dir .. "/tls/ca.crt" }, p.tls)
    assert.same({ type = "scram-sha-256", file = dir .. "/userlist.txt",
                  query = "SELECT usename, passwd FROM pg_shadow WHERE usename = $1",
                  query_cluster = "main" }, p.auth)
    assert.same({ client_idle = 600, wait_backend = 0.5, connect = 5, idle_in_transaction = 0,
                  client_login = 60 }, p.timeouts)
    assert.same({ database = "sy_admin", users = { "ops", "alice" } }, p.admin)
    assert.same({ max_per_backend = 0 }, p.prepared_statements)
    assert.same({ drain_timeout = 2.5 }, p.shutdown)
    assert.is_false(p.switchyard_variables)
    -- The raw table is left alone.
    assert.equal("tls/server.crt", raw.proxy.tls.cert)
    assert.is_nil(raw.proxy.listeners)
  end)

  it("reports every kind of bad value with its path, all at once", function()
    local errs = errors_of(with_proxy({
      lisen = {},
      listen = { "::1:6432", "x:0", "[::1]:70000", 5, "a:1", "A:1", "[127.0.0.1]:5", "*:6432" },
      unix_socket_dir = "/nonexistent/switchyard-run",
      unix_socket_mode = "0778",
      max_clients = 0, client_buffer = 8191, max_message = 1.5,
      pool_mode = "statement",
      timeouts = { connect = -1, client_idel = 3, client_login = "60" },
      admin = { database = "", users = { "ops", 3 } },
      prepared_statements = { max_per_backend = -1 },
      shutdown = { drain_timeout = 0 },
      switchyard_variables = "yes",
    }))
    has_error(errs, 'proxy.lisen: unknown key (did you mean "listen"?)')
    has_error(errs, 'proxy.listen[1]: IPv6 addresses go in brackets, as in "[::1]:6432", '
      .. 'got string "::1:6432"')
    has_error(errs, 'proxy.listen[2]: expected "host:port" with a port in 1..65535, got string "x:0"')
    has_error(errs, 'proxy.listen[3]: expected "host:port" with a port in 1..65535, '
      .. 'got string "[::1]:70000"')
    has_error(errs, 'proxy.listen[4]: expected "host:port" (IPv6 in brackets: "[::1]:6432"), '
      .. "got number 5")
    has_error(errs, 'proxy.listen[6]: duplicate listen address "A:1" (also listen[5])')
    has_error(errs, 'proxy.listen[7]: expected "host:port" (IPv6 in brackets: "[::1]:6432"), '
      .. 'got string "[127.0.0.1]:5"')
    has_error(errs, 'proxy.listen[8]: expected "host:port" (IPv6 in brackets: "[::1]:6432"), '
      .. 'got string "*:6432"')
    has_error(errs, "proxy.unix_socket_dir: directory /nonexistent/switchyard-run not found")
    has_error(errs, 'proxy.unix_socket_mode: expected a string of octal digits such as "0777", '
      .. 'got string "0778"')
    has_error(errs, "proxy.max_clients: expected a positive integer, got number 0")
    has_error(errs, "proxy.client_buffer: expected an integer >= 8192, got number 8191")
    has_error(errs, "proxy.max_message: expected an integer >= 65536, got number 1.5")
    has_error(errs, 'proxy.pool_mode: expected one of "transaction", "session", got string "statement"')
    has_error(errs, 'proxy.timeouts.client_idel: unknown key (did you mean "client_idle"?)')
    has_error(errs, "proxy.timeouts.connect: expected a non-negative number, got number -1")
    has_error(errs, 'proxy.timeouts.client_login: expected a non-negative number, got string "60"')
    has_error(errs, 'proxy.admin.database: expected a non-empty database name, got string ""')
    has_error(errs, "proxy.admin.users[2]: expected a non-empty user name, got number 3")
    has_error(errs, "proxy.prepared_statements.max_per_backend: expected a non-negative integer, "
      .. "got number -1")
    has_error(errs, "proxy.shutdown.drain_timeout: expected a positive number, got number 0")
    has_error(errs, 'proxy.switchyard_variables: expected true or false, got string "yes"')
    assert.equal(22, #errs)
  end)

  it("reports sections of the wrong type", function()
    has_error(errors_of(with_proxy(true)), "proxy: expected a table, got boolean true")
    local errs = errors_of(with_proxy({
      listen = "127.0.0.1:6432", unix_socket_dir = 7, unix_socket_mode = 511,
      tls = "on", auth = 1, timeouts = 5, admin = { users = "ops" },
      prepared_statements = false, shutdown = {},
    }))
    has_error(errs, 'proxy.listen: expected an array of "host:port" strings, '
      .. 'got string "127.0.0.1:6432"')
    has_error(errs, "proxy.unix_socket_dir: expected a directory path, got number 7")
    has_error(errs, 'proxy.unix_socket_mode: expected a string of octal digits such as "0777", '
      .. "got number 511")
    has_error(errs, 'proxy.tls: expected a table, got string "on"')
    has_error(errs, "proxy.auth: expected a table, got number 1")
    has_error(errs, "proxy.timeouts: expected a table, got number 5")
    has_error(errs, 'proxy.admin.users: expected an array of user names, got string "ops"')
    has_error(errs, "proxy.prepared_statements: expected a table, got boolean false")
    assert.equal(8, #errs)
    -- Unknown keys inside the tls and auth tables too.
    errs = errors_of(with_proxy({ tls = { mdoe = "disable" }, auth = { users = "x" },
                                  admin = { db = "x" } }))
    has_error(errs, 'proxy.tls.mdoe: unknown key (did you mean "mode"?)')
    has_error(errs, "proxy.auth.users: unknown key")
    has_error(errs, "proxy.admin.db: unknown key")
    assert.equal(3, #errs)
  end)

  it("needs a listen address or a Unix socket directory", function()
    assert.same({ "proxy.listen: expected at least one address when there is no unix_socket_dir" },
      errors_of(with_proxy({ listen = {} })))
    local dir = tmpdir()
    local p = assert(validate(with_proxy({ listen = {}, unix_socket_dir = dir }))).proxy
    assert.same({}, p.listen)
    assert.same({}, p.listeners)
    assert.equal(dir .. "/.s.PGSQL.6432", p.unix_socket_path)
  end)

  it("refuses a socket directory that is a file or too long a socket path", function()
    local dir = tmpdir()
    write(dir .. "/file", "x")
    assert.same({ ("proxy.unix_socket_dir: directory %s/file not found"):format(dir) },
      errors_of(with_proxy({ unix_socket_dir = "file" }), dir))
    local long = dir .. "/" .. ("d"):rep(100)
    assert(os.execute("mkdir -p '" .. long .. "'"))
    assert.same({ ("proxy.unix_socket_dir: socket path %s/.s.PGSQL.6432 is longer than 107 bytes")
      :format(long) }, errors_of(with_proxy({ unix_socket_dir = long })))
  end)

  it("tls: cert and key are required unless mode is disable, and must exist", function()
    for _, mode in ipairs({ "prefer", "require" }) do
      local errs = errors_of(with_proxy({ tls = { mode = mode } }))
      assert.same({
        ('proxy.tls.cert: required when mode is "%s" (a path to a PEM file)'):format(mode),
        ('proxy.tls.key: required when mode is "%s" (a path to a PEM file)'):format(mode),
      }, errs)
    end
    assert.same({ mode = "disable" },
      assert(validate(with_proxy({ tls = { mode = "disable" } }))).proxy.tls)

    local dir = tmpdir()
    write(dir .. "/server.crt", "cert")
    local errs = errors_of(with_proxy({ tls = { mode = "prefer", cert = "server.crt",
                                                key = "server.key", ca = "" } }), dir)
    assert.same({
      ("proxy.tls.key: file %s/server.key not found"):format(dir),
      'proxy.tls.ca: expected a path to a PEM file, got string ""',
    }, errs)
    -- Paths given with mode = "disable" are still checked.
    assert.same({ ("proxy.tls.cert: file %s/missing.crt not found"):format(dir) },
      errors_of(with_proxy({ tls = { cert = "missing.crt" } }), dir))
    assert.same({ 'proxy.tls.mode: expected one of "disable", "prefer", "require", '
      .. 'got string "verify-full"' }, errors_of(with_proxy({ tls = { mode = "verify-full" } })))
  end)

  it("auth: md5 and scram need an existing userlist file (or an auth query)", function()
    for _, t in ipairs({ "md5", "scram-sha-256" }) do
      assert.same({ ('proxy.auth.file: required when type is "%s" (a path to a userlist.txt '
        .. "file, unless auth.query is set)"):format(t) },
        errors_of(with_proxy({ auth = { type = t } })))
    end
    local dir = tmpdir()
    assert.same({ ("proxy.auth.file: file %s/userlist.txt not found"):format(dir) },
      errors_of(with_proxy({ auth = { type = "md5", file = "userlist.txt" } }), dir))
    assert.same({ ("proxy.auth.file: file %s not found"):format(dir) },
      errors_of(with_proxy({ auth = { type = "md5", file = dir } })))
    write(dir .. "/userlist.txt", '"alice" "md5abc"\n')
    assert.same({ type = "md5", file = dir .. "/userlist.txt" },
      assert(validate(with_proxy({ auth = { type = "md5", file = "userlist.txt" } }), dir)).proxy.auth)
    -- An auth query alone is enough; it runs on the default cluster.
    assert.same({ type = "scram-sha-256", query = "SELECT 1", query_cluster = "main" },
      assert(validate(with_proxy({ auth = { type = "scram-sha-256", query = "SELECT 1" } })))
        .proxy.auth)
    assert.same({ type = "trust" }, assert(validate(with_proxy({ auth = {} }))).proxy.auth)
    assert.same({ 'proxy.auth.type: expected one of "trust", "md5", "scram-sha-256", '
      .. 'got string "password"' }, errors_of(with_proxy({ auth = { type = "password" } })))
  end)

  it("auth: the query and the cluster it runs on", function()
    local raw = {
      clusters = {
        a = { nodes = { { name = "p", conninfo = "x", role = "primary" } } },
        b = { nodes = { { name = "p", conninfo = "y", role = "primary" } } },
      },
      default_cluster = "a",
      proxy = { auth = { type = "md5", query = "SELECT $1", query_cluster = "b" } },
    }
    assert.equal("b", assert(validate(raw)).proxy.auth.query_cluster)
    raw.proxy.auth.query_cluster = "c"
    assert.same({ 'proxy.auth.query_cluster: no cluster named "c" (clusters: a, b)' }, errors_of(raw))
    raw.proxy.auth.query_cluster = 2
    assert.same({ "proxy.auth.query_cluster: expected a cluster name, got number 2" }, errors_of(raw))
    raw.proxy.auth = { type = "md5", query = "", query_cluster = "b" }
    assert.same({ 'proxy.auth.query: expected a non-empty SQL string, got string ""' }, errors_of(raw))
    raw.proxy.auth = { query_cluster = "b" }
    assert.same({ "proxy.auth.query_cluster: only used with auth.query, which is not set" },
      errors_of(raw))
  end)

  it("resolves relative paths against the config file's directory in config.load", function()
    local dir = tmpdir()
    write(dir .. "/userlist.txt", '"alice" "md5abc"\n')
    local path = write(dir .. "/switchyard.lua", [[
      return {
        clusters = { main = { nodes = { { name = "p", conninfo = "x", role = "primary" } } } },
        proxy = { auth = { type = "md5", file = "userlist.txt" }, listen = { "127.0.0.1:7000" } },
      }
    ]])
    local cfg, errs = config.load(path, ROOT)
    assert.is_nil(errs)
    assert.equal(dir .. "/userlist.txt", cfg.proxy.auth.file)
    assert.same({ "127.0.0.1:7000" }, cfg.proxy.listen)
  end)
end)

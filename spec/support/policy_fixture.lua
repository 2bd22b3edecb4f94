-- Test bed for policies and balancers without the C engine: builds a
-- topology out of plain tables shaped like the engine's nodes, installs a
-- fake `switchyard` facade (package.loaded.switchyard) and loads a policy
-- file the way the engine does, so a spec can call policy.route(q) and
-- count where queries land.
--
-- Live node figures (healthy, inflight, latency_ms, ...) are plain fields
-- here; a spec changes them directly to stage a scenario.

local fixture = {}

-- The repository root, from this file's own location, so specs work from
-- any working directory and with any busted --lpath.
do
  local src = debug.getinfo(1, "S").source
  local path = src:sub(1, 1) == "@" and src:sub(2) or ""
  local root = path:match("^(.*)/spec/support/[^/]*$") or "."
  local wanted = root .. "/lua/?.lua;" .. root .. "/policies/?.lua;"
  if not package.path:find(wanted, 1, true) then
    package.path = wanted .. package.path
  end
  fixture.root = require("switchyard.resolve").absolute(root)
end

local config = require("switchyard.config")

-- A primary and two replicas in one cluster, the shape most specs need.
function fixture.raw_config()
  return {
    clusters = {
      main = {
        nodes = {
          { name = "primary", conninfo = "host=127.0.0.1 port=5432", role = "primary" },
          { name = "replica1", conninfo = "host=127.0.0.1 port=5433", role = "replica" },
          { name = "replica2", conninfo = "host=127.0.0.1 port=5434", role = "replica" },
        },
      },
    },
  }
end

-- One node as the engine presents it; fields override the defaults.
function fixture.node(fields)
  local node = {
    name = "main.node", node_name = "node", cluster = "main", role = "replica",
    weight = 1, tags = {}, id = 0,
    healthy = true, inflight = 0, idle = 0, busy = 0, waiting = 0,
    latency_ms = nil, errors = 0, queries = 0, error_rate = 0,
    lag_bytes = nil, lag_ms = nil,
  }
  for k, v in pairs(fields or {}) do node[k] = v end
  if fields and fields.name and not fields.node_name then
    node.node_name = fields.name:match("%.(.*)$") or fields.name
  end
  if fields and fields.name and not fields.cluster then
    node.cluster = fields.name:match("^([^.]*)%.") or node.cluster
  end
  return node
end

-- The topology the engine would build from a normalised cfg.  Nodes with
-- role "auto" are shown as replicas (the engine decides at run time).
function fixture.topology(cfg)
  local topo = {
    clusters = {}, cluster_list = {}, nodes = {}, by_name = {},
    default_cluster = cfg.default_cluster, schema_owner = {},
  }
  for _, c in ipairs(cfg.clusters) do
    local cluster = { name = c.name, primary = nil, replicas = {}, nodes = {}, schemas = {} }
    for i, s in ipairs(c.schemas) do
      cluster.schemas[i] = s
      topo.schema_owner[s] = c.name
    end
    for _, n in ipairs(c.nodes) do
      local node = fixture.node({
        name = n.full_name, node_name = n.name, cluster = c.name,
        role = n.role == "primary" and "primary" or "replica",
        weight = n.weight, tags = n.tags, id = #topo.nodes + 1,
      })
      topo.nodes[#topo.nodes + 1] = node
      topo.by_name[node.name] = node
      cluster.nodes[#cluster.nodes + 1] = node
      if node.role == "primary" then
        cluster.primary = node
      else
        cluster.replicas[#cluster.replicas + 1] = node
      end
    end
    topo.clusters[c.name] = cluster
    topo.cluster_list[#topo.cluster_list + 1] = cluster
  end
  return topo
end

-- Installs the fake facade the policy sees as require("switchyard").
function fixture.install(cfg, shared, topology)
  local sy = {
    shared = shared or {},
    options = cfg.policy_options or {},
    config = cfg,
    topology = topology,
    -- the engine's read-only "none" for q.flags, q.hints and q.schemas
    empty = setmetatable({}, { __newindex = function() error("this table is read-only", 2) end }),
    logs = {},
    clock = 1000,
  }
  function sy.log(level, msg)
    sy.logs[#sy.logs + 1] = { level = level, message = msg }
  end
  function sy.now() return sy.clock end
  package.loaded.switchyard = sy
  return sy
end

-- Loads a policy file as the engine does: run the chunk, demand a table
-- with route(), run selftest() when present.
function fixture.load_policy(path)
  local chunk = assert(loadfile(path))
  local policy = chunk()
  assert(type(policy) == "table", path .. " must return a table")
  assert(type(policy.route) == "function", path .. " must define route(q)")
  if policy.selftest then policy.selftest() end
  return policy
end

local Bed = {}
Bed.__index = Bed

-- fixture.new{ raw = config table (default raw_config()), policy = name or
-- path, options = policy_options, shared = table kept across "reloads" }
-- Raises when the config is invalid or the policy refuses to load.
function fixture.new(args)
  args = args or {}
  local raw = args.raw or fixture.raw_config()
  if args.policy then raw.policy = args.policy end
  if args.options then raw.policy_options = args.options end
  local cfg, errs = config.validate(raw, args.config_dir or fixture.root, fixture.root)
  if not cfg then error("fixture config invalid:\n" .. table.concat(errs, "\n"), 2) end
  local bed = setmetatable({}, Bed)
  bed.cfg = cfg
  bed.topology = fixture.topology(cfg)
  bed.sy = fixture.install(cfg, args.shared, bed.topology)
  bed.policy = fixture.load_policy(cfg.policy_path)
  return bed
end

function Bed:node(name)
  return assert(self.topology.by_name[name], "no node " .. tostring(name))
end

-- A q with every field the engine fills; fields override.
function Bed:q(fields)
  local q = {
    sql = "SELECT 1", kind = "read", in_tx = false, flags = self.sy.empty, hints = self.sy.empty,
    params = {}, schemas = self.sy.empty,
    session = { user = "app", database = "app", application_name = "spec", vars = {} },
    retry = false, topology = self.topology,
  }
  for k, v in pairs(fields or {}) do q[k] = v end
  return q
end

function Bed:route(fields)
  return self.policy.route(self:q(fields))
end

-- Routes the same q n times; returns counts by node name (rejections are
-- counted under "reject").
function Bed:tally(n, fields)
  local q = self:q(fields)
  local counts = {}
  for _ = 1, n do
    local target = self.policy.route(q)
    local key = type(target) == "table" and (target.name or target.role) or "reject"
    counts[key] = (counts[key] or 0) + 1
  end
  return counts
end

-- For balancer specs: calls pick n times, counting by node name.
function fixture.tally_picks(balancer, candidates, n, options, state)
  state = state or {}
  local counts = {}
  for _ = 1, n do
    local node = balancer.pick(candidates, nil, state, options)
    local key = node and node.name or "none"
    counts[key] = (counts[key] or 0) + 1
  end
  return counts, state
end

-- Writes text to a fresh temporary file; returns its path.
function fixture.tempfile(text, suffix)
  local path = os.tmpname()
  if suffix then
    os.remove(path)
    path = path .. suffix
  end
  local f = assert(io.open(path, "w"))
  f:write(text)
  f:close()
  return path
end

return fixture

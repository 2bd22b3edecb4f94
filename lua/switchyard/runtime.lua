-- The Lua half of the engine's boot: loads and validates the config, builds
-- the topology tables policies see, creates the `switchyard` facade module,
-- loads the policy and checks its hooks.  The C core calls load() in a fresh
-- Lua state for every (re)load and reads the flat node list it returns.
local config = require("switchyard.config")

local runtime = {}

local function noop() end

-- Records every Lua file a state loads through require(), so the engine can
-- watch them all for changes, not only the config and the policy file.
local function install_file_recorder(files)
  local searchpath = package.searchpath
  local function recording_searcher(name)
    local path = searchpath(name, package.path)
    if not path then
      return nil
    end
    local chunk, err = loadfile(path)
    if not chunk then
      error(err, 0)
    end
    files[#files + 1] = path
    return chunk
  end
  table.insert(package.loaders, 2, recording_searcher)
end

local function build_topology(cfg)
  local topo = {
    clusters = {},
    cluster_list = {},
    nodes = {},
    by_name = {},
    schema_owner = {},
    default_cluster = cfg.default_cluster or cfg.clusters[1].name,
  }
  local flat = {}
  for _, c in ipairs(cfg.clusters) do
    local cluster = { name = c.name, replicas = {}, nodes = {}, schemas = c.schemas or {} }
    for _, n in ipairs(c.nodes) do
      local id = #topo.nodes + 1
      local node = {
        id = id,
        name = n.full_name,
        node_name = n.name,
        cluster = c.name,
        -- "auto" nodes are neither until health polling says (apply_roles)
        role = n.role == "auto" and "unknown" or n.role,
        weight = n.weight,
        tags = n.tags,
        priority = n.priority,
      }
      topo.nodes[id] = node
      topo.by_name[node.name] = node
      cluster.nodes[#cluster.nodes + 1] = node
      if n.role == "primary" then
        cluster.primary = node
      elseif n.role == "replica" then
        cluster.replicas[#cluster.replicas + 1] = node
      end
      flat[id] = {
        full_name = n.full_name, name = n.name, cluster = c.name,
        conninfo = n.conninfo, role = n.role, weight = n.weight, pool = c.pool,
        priority = n.priority, failover = c.failover,
      }
    end
    for _, schema in ipairs(cluster.schemas) do
      topo.schema_owner[schema] = c.name
    end
    topo.clusters[c.name] = cluster
    topo.cluster_list[#topo.cluster_list + 1] = cluster
  end
  return topo, flat
end

local function load_policy(path)
  local chunk, err = loadfile(path)
  if not chunk then
    error("policy " .. err, 0)
  end
  local policy = chunk()
  if type(policy) ~= "table" then
    error("policy " .. path .. ": must return a table with route(q), got " .. type(policy), 0)
  end
  if type(policy.route) ~= "function" then
    error("policy " .. path .. ": route(q) is missing (the table has no function 'route')", 0)
  end
  for _, hook in ipairs({ "selftest", "on_event", "failover" }) do
    if policy[hook] ~= nil and type(policy[hook]) ~= "function" then
      error("policy " .. path .. ": " .. hook .. " must be a function, got " .. type(policy[hook]), 0)
    end
  end
  return policy
end

-- c: functions the C core lends the facade ({ log = f(level, msg), now = f() }).
-- shared: the previous state's sy.shared, copied (or nil on first load).
-- Returns the state table the core keeps, or raises with every problem.
function runtime.load(config_path, home, c, shared)
  local files = { config_path }
  install_file_recorder(files)
  -- balancers and other modules given by path are loaded by resolve.lua
  require("switchyard.resolve").on_file_loaded = function(path)
    files[#files + 1] = path
  end
  local cfg, errors = config.load(config_path, home)
  if not cfg then
    error(table.concat(errors, "\n"), 0)
  end
  local topo, flat = build_topology(cfg)
  local facade = {
    shared = shared or {},
    options = cfg.policy_options or {},
    config = cfg,
    topology = topo,
    log = c and c.log or noop,
    now = c and c.now or os.clock,
    trace = noop,
    tracing = false, -- true under `switchyard route`: policies may explain
  }
  -- q.flags, q.hints and q.schemas of a statement without any: one shared
  -- read-only table, so a policy can test for "none" with one comparison.
  facade.empty = setmetatable({}, { __newindex = function() error("this table is read-only", 2) end })
  package.loaded.switchyard = facade
  package.path = cfg.config_dir .. "/?.lua;" .. package.path
  return {
    cfg = cfg,
    facade = facade,
    topology = topo,
    nodes = flat,
    files = files,
    q = { topology = topo, flags = facade.empty, hints = facade.empty, schemas = facade.empty,
          retry = false },
    empty = facade.empty,
    session_default = { vars = {} },
  }
end

-- The doors C calls for every decision (core/lua_route.c).  q's fields
-- arrive as arguments and are stored here, where storing a field is one
-- bytecode instead of three C API calls.  (q.sql and q.params are made on
-- first read by q's __index, in C, which also clears them after the
-- decision.)  When route() returns a node table its id comes back as a
-- fourth result, so C need not look into the table: one lookup in a map
-- keyed by the node tables themselves (a nil r reads nil).
--
-- full takes every field.  plain is for the common statement: no flags,
-- hints or schemas, not a retry; it stores three fields, and puts the
-- other four back to "none" only after a full decision changed them.
local function make_entries(state)
  local q, route, empty = state.q, state.policy.route, state.empty
  local node_ids = {}
  for id, node in ipairs(state.topology.nodes) do node_ids[node] = id end
  local others_set = false
  local function full(kind, in_tx, flags, hints, schemas, session, retry)
    q.kind, q.in_tx, q.flags, q.hints, q.schemas, q.session, q.retry =
      kind, in_tx, flags, hints, schemas, session, retry
    others_set = true
    local r, msg, code = route(q)
    return r, msg, code, node_ids[r]
  end
  local function plain(kind, in_tx, session)
    local fields = q -- one upvalue read for all the stores below
    fields.kind = kind
    fields.in_tx = in_tx
    fields.session = session
    if others_set then
      fields.flags, fields.hints, fields.schemas, fields.retry = empty, empty, empty, false
      others_set = false
    end
    local r, msg, code = route(fields)
    return r, msg, code, node_ids[r]
  end
  return full, plain
end

-- Loads the policy file into the state (after runtime.load, so the engine
-- knows a config problem from a policy problem).
function runtime.load_policy(state)
  local files = state.files
  files[#files + 1] = state.cfg.policy_path
  state.policy = load_policy(state.cfg.policy_path)
  state.route_entry, state.route_entry_plain = make_entries(state)
end

-- Runs the policy's optional selftest once the node tables are live.
function runtime.selftest(state)
  if state.policy.selftest then
    state.policy.selftest()
  end
end

-- The roles health polling found (core/roles.c), on every reload and
-- whenever one changes.  roles[id] = "primary" | "replica" | "unknown";
-- clusters[name] = { primary = node id or nil, split_brain = { names } or
-- nil }.  Each cluster's replicas list is refilled in place (config order),
-- so a policy holding on to it sees the change too.
function runtime.apply_roles(state, roles, clusters)
  local topo = state.topology
  for _, cluster in ipairs(topo.cluster_list) do
    local info = clusters[cluster.name] or {}
    local replicas = cluster.replicas
    for i = #replicas, 1, -1 do replicas[i] = nil end
    for _, node in ipairs(cluster.nodes) do
      node.role = roles[node.id] or node.role
      if node.role == "replica" then replicas[#replicas + 1] = node end
    end
    cluster.primary = info.primary and topo.nodes[info.primary] or nil
    cluster.split_brain = info.split_brain
    cluster.failover_wait = info.wait
  end
end

-- The default choice of a managed failover: the candidate that replayed
-- the most WAL (it loses the fewest acknowledged writes), then the higher
-- priority, then the one listed first.
local function default_failover(_, candidates)
  local best
  for _, n in ipairs(candidates) do
    if best == nil then
      best = n
    else
      local a, b = n.wal_position or -1, best.wal_position or -1
      if a > b or (a == b and n.priority > best.priority) then best = n end
    end
  end
  return best
end

-- Managed failover: which replica to promote.  ids: the healthy replicas
-- of the cluster with priority > 0, in config order.  The policy's
-- failover(cluster, candidates) decides if it has one (a node, or nil to
-- promote none); returns the chosen node's id or nil.
function runtime.choose_promotion(state, cluster_name, ids)
  local topo = state.topology
  local candidates = {}
  for i, id in ipairs(ids) do candidates[i] = topo.nodes[id] end
  local choose = state.policy.failover or default_failover
  local node = choose(topo.clusters[cluster_name], candidates)
  if node == nil then return nil end
  for _, c in ipairs(candidates) do
    if c == node then return node.id end
  end
  error("failover() returned a node that is not one of the candidates", 0)
end

-- Patroni's /cluster reply as a member list (core/patroni.c).
runtime.patroni_members = require("switchyard.patroni").members

-- Percent-decodes sqlcommenter values ('a%20b' -> 'a b').
function runtime.url_decode(s)
  return (s:gsub("%%(%x%x)", function(h) return string.char(tonumber(h, 16)) end))
end

return runtime

-- Validates and normalises a switchyard configuration.
--
-- A config is a Lua file that returns a table.  config.load() runs it in an
-- empty sandbox, config.validate() checks every key and fills every default,
-- and the C engine only ever sees the normalised result, so nothing past
-- this module needs to wonder whether a key is present or well typed.
-- Every problem is collected (not just the first) so one edit-check cycle
-- fixes a whole config; each message starts with the key path.
--
-- The config file, every key with its default:
--
--   return {
--     clusters = {                -- required: map cluster name ([%w_]+) -> cluster
--       main = {
--         nodes = {               -- required: array of at least one node
--           {
--             name = "primary",   -- required: unique in the cluster, [%w_-]+
--             conninfo = "host=127.0.0.1 port=5432 dbname=app",  -- required: libpq conninfo
--             role = "auto",      -- "primary" | "replica" | "auto" (at most one
--                                 --   "primary" per cluster).  A first guess:
--                                 --   once health polling has reached a node,
--                                 --   pg_is_in_recovery() decides its role, and
--                                 --   "auto" nodes have none until then
--             weight = 1,         -- positive integer, share of reads for balancers
--             tags = {},          -- map string -> string | number | boolean
--             priority = 1,       -- managed failover: among replicas as far
--                                 --   ahead, the highest is promoted; 0 never
--           },
--         },
--         schemas = {},           -- schema names this cluster owns (lowercased;
--                                 --   a schema belongs to at most one cluster)
--         pool = {},              -- per-cluster overrides of the top-level pool
--         failover = {            -- what happens when the primary goes down
--           mode = "none",        --   "none": writes fail until a primary is back
--                                 --   (an external failover is followed anyway);
--                                 --   "managed": switchyard promotes a replica
--                                 --   "patroni": Patroni decides; roles come from
--                                 --   its REST API, confirmed by health polling
--           patroni = nil,        --   "patroni": REST API URLs, any members'
--                                 --   (e.g. { "http://10.0.0.1:8008", ... });
--                                 --   read every health.interval.  Nodes match
--                                 --   members by name, or by conninfo host:port
--           write_wait = 5,       --   s a write waits for a new primary (managed,
--                                 --   patroni)
--           promote_timeout = 30, --   s pg_promote() may take
--         },
--       },
--     },
--     default_cluster = nil,      -- required when there is more than one cluster;
--                                 --   the only cluster otherwise
--     policy = "read_write_split",-- built-in name (<home>/policies/<name>.lua) or a
--                                 --   path to a .lua file (has "/" or ends in ".lua"),
--                                 --   relative to the config file's directory
--     policy_options = {},        -- free-form, handed to the policy as sy.options
--     pool = {                    -- defaults for every node's pool
--       min = 1,                  -- connections kept open (integer >= 0, <= max)
--       max = 10,                 -- connections at most (integer >= 1)
--       idle_timeout = 60,        -- s; idle connections above min are closed (0 = never)
--       max_lifetime = 3600,      -- s; a connection is recycled after this (0 = never)
--       acquire_timeout = 5,      -- s a query waits for a connection (> 0)
--       connect_timeout = 5,      -- s (> 0)
--       reconnect_min = 0.1,      -- s, first reconnect backoff (> 0, <= reconnect_max)
--       reconnect_max = 10,       -- s, backoff cap
--     },
--     query_timeout = 0,          -- s, 0 = none
--     retry_reads = true,         -- retry a failed read once on another node
--                                 --   (never inside a transaction, never a write)
--     write_functions = {},       -- extra lowercase function names that make a
--                                 --   statement a write (besides nextval, setval, ...)
--     route_budget = {            -- limits for one routing decision of the policy
--       instructions = 1000000,   -- Lua VM instructions (integer >= 1)
--       ms = 50,                  -- wall-clock milliseconds (> 0)
--     },
--     health = {                  -- the per-node health poller (its own connection)
--       interval = 1,             -- s between polls (>= 0.1)
--       timeout = 2,              -- s a poll may take before it counts as failed
--       fall = 3,                 -- consecutive failed polls that mark a node down
--       rise = 2,                 -- consecutive good polls that mark it up again
--     },
--     log_level = "info",         -- "debug" | "info" | "warn" | "error"
--     watch = true,               -- reload when the config or a policy file changes
--     proxy = nil,               -- optional: the PostgreSQL server front end;
--                                 --   its keys and defaults are documented in
--                                 --   lua/switchyard/config_proxy.lua
--   }
--
-- The normalised cfg has the same keys with every default filled, plus:
--   cfg.clusters         array sorted by name of
--                        { name, nodes, schemas, pool (merged), primary (node name or nil) }
--                        where each node is
--                        { name, full_name = "<cluster>.<name>", cluster, conninfo,
--                          role, weight, tags }
--   cfg.cluster_by_name  map name -> the same cluster tables
--   cfg.schema_owner     map schema -> cluster name
--   cfg.default_cluster  always set
--   cfg.policy_path      absolute path of the policy file
--   cfg.config_dir       absolute directory the relative paths were resolved against
--   cfg.config_path      (config.load only) absolute path of the config file
--   cfg.home             the switchyard home used for built-ins
--   cfg.proxy            nil without a proxy section; see config_proxy.lua

local resolve = require("switchyard.resolve")
local check = require("switchyard.config_check")
local proxy_section = require("switchyard.config_proxy")

local describe, child, index, add, expected = check.describe, check.child, check.index,
  check.add, check.expected
local sorted_keys, check_keys, array_length = check.sorted_keys, check.check_keys,
  check.array_length
local check_number, check_string, check_boolean = check.check_number, check.check_string,
  check.check_boolean
local check_number_fields, merge = check.check_number_fields, check.merge
local check_settings, finite = check.check_settings, check.finite
local check_choice = check.check_choice

local config = {}

-- A fresh copy of the proxy section's defaults.
config.proxy_defaults = proxy_section.defaults

-- ------------------------------------------------------------------ defaults

local POOL_DEFAULTS = {
  min = 1, max = 10, idle_timeout = 60, max_lifetime = 3600,
  acquire_timeout = 5, connect_timeout = 5, reconnect_min = 0.1, reconnect_max = 10,
}

local DEFAULTS = {
  policy = "read_write_split",
  query_timeout = 0,
  retry_reads = true,
  route_budget = { instructions = 1000000, ms = 50 },
  health = { interval = 1, timeout = 2, fall = 3, rise = 2 },
  log_level = "info",
  watch = true,
}

-- Returned as copies so a caller cannot change the defaults of later loads.
function config.defaults()
  local pool = {}
  for k, v in pairs(POOL_DEFAULTS) do pool[k] = v end
  return {
    policy = DEFAULTS.policy, policy_options = {}, pool = pool,
    query_timeout = DEFAULTS.query_timeout, retry_reads = DEFAULTS.retry_reads,
    write_functions = {},
    route_budget = { instructions = DEFAULTS.route_budget.instructions,
                     ms = DEFAULTS.route_budget.ms },
    health = { interval = DEFAULTS.health.interval, timeout = DEFAULTS.health.timeout,
               fall = DEFAULTS.health.fall, rise = DEFAULTS.health.rise },
    log_level = DEFAULTS.log_level, watch = DEFAULTS.watch,
  }
end

-- The checks for numeric keys.  "int" also demands a whole number; min is
-- inclusive unless positive is set (then the value must be > min).
local POOL_FIELDS = {
  { key = "min", int = true, min = 0 },
  { key = "max", int = true, min = 1 },
  { key = "idle_timeout", min = 0 },
  { key = "max_lifetime", min = 0 },
  { key = "acquire_timeout", min = 0, positive = true },
  { key = "connect_timeout", min = 0, positive = true },
  { key = "reconnect_min", min = 0, positive = true },
  { key = "reconnect_max", min = 0, positive = true },
}

local TOP_KEYS = {
  "clusters", "default_cluster", "policy", "policy_options", "pool", "query_timeout",
  "retry_reads", "write_functions", "route_budget", "log_level", "watch", "health", "proxy",
}
local CLUSTER_KEYS = { "nodes", "schemas", "pool", "failover" }
local FAILOVER_MODES = { "none", "managed", "patroni" }
local FAILOVER_FIELDS = {
  { key = "write_wait", min = 0 },
  { key = "promote_timeout", min = 0, positive = true },
}
local NODE_KEYS = { "name", "conninfo", "role", "weight", "tags", "priority" }
local ROLES = { primary = true, replica = true, auto = true }
local LOG_LEVELS = { "debug", "info", "warn", "error" }

-- ------------------------------------------------------------------ helpers
-- (the generic checks live in switchyard.config_check)
local function check_pool_fields(errs, path, raw)
  return check_number_fields(errs, path, raw, POOL_FIELDS)
end


-- The relations between pool fields, checked on the merged result.
local function check_pool_relations(errs, path, pool)
  if pool.min > pool.max then
    add(errs, child(path, "min"), ("expected at most max (%s), got number %s")
      :format(tostring(pool.max), tostring(pool.min)))
  end
  if pool.reconnect_min > pool.reconnect_max then
    add(errs, child(path, "reconnect_min"), ("expected at most reconnect_max (%s), got number %s")
      :format(tostring(pool.reconnect_max), tostring(pool.reconnect_min)))
  end
end

-- ------------------------------------------------------------------ pieces

local function check_tags(errs, path, raw)
  local tags = {}
  if raw == nil then return tags end
  if type(raw) ~= "table" then
    expected(errs, path, "a map of tag name -> string, number or boolean", raw)
    return tags
  end
  for _, k in ipairs(sorted_keys(raw)) do
    local v = raw[k]
    if type(k) ~= "string" or k == "" then
      add(errs, child(path, k), "tag names must be non-empty strings")
    elseif (type(v) == "number" and not finite(v))
      or (type(v) ~= "string" and type(v) ~= "number" and type(v) ~= "boolean") then
      expected(errs, child(path, k), "a string, number or boolean", v)
    else
      tags[k] = v
    end
  end
  return tags
end

local function check_node(errs, path, raw, cluster_name)
  if type(raw) ~= "table" then
    expected(errs, path, "a node table", raw)
    return nil
  end
  check_keys(errs, path, raw, NODE_KEYS)
  local node = { cluster = cluster_name }

  local name = raw.name
  if name == nil then
    add(errs, child(path, "name"), "required (a node name: letters, digits, _ and -)")
  elseif type(name) ~= "string" or not name:match("^[%w_%-]+$") then
    expected(errs, child(path, "name"), "a node name (letters, digits, _ and -)", name)
  else
    node.name = name
    node.full_name = cluster_name .. "." .. name
  end

  if raw.conninfo == nil then
    add(errs, child(path, "conninfo"), "required (a libpq connection string)")
  else
    node.conninfo = check_string(errs, child(path, "conninfo"), raw.conninfo,
      "a non-empty libpq connection string")
  end

  local role = raw.role
  if role == nil then
    node.role = "auto"
  elseif not ROLES[role] then
    expected(errs, child(path, "role"), '"primary", "replica" or "auto"', role)
  else
    node.role = role
  end

  if raw.weight == nil then
    node.weight = 1
  else
    node.weight = check_number(errs, child(path, "weight"), raw.weight,
      { int = true, min = 0, positive = true })
  end

  node.tags = check_tags(errs, child(path, "tags"), raw.tags)
  if raw.priority == nil then
    node.priority = 1
  else
    node.priority = check_number(errs, child(path, "priority"), raw.priority, { int = true, min = 0 })
  end
  return node
end

local function check_nodes(errs, path, raw, cluster_name)
  local nodes = {}
  if raw == nil then
    add(errs, path, "required (an array of at least one node)")
    return nodes
  end
  if type(raw) ~= "table" then
    expected(errs, path, "an array of nodes", raw)
    return nodes
  end
  local n = array_length(raw)
  if n == nil then
    add(errs, path, "expected an array of nodes, got a table with non-array keys")
    -- Keep going with whatever integer keys exist, to report node errors too.
    n = 0
    while raw[n + 1] ~= nil do n = n + 1 end
  elseif n == 0 then
    add(errs, path, "expected at least one node")
    return nodes
  end

  local seen, primary_at = {}, nil
  for i = 1, n do
    local npath = index(path, i)
    local node = check_node(errs, npath, raw[i], cluster_name)
    if node then
      if node.name then
        if seen[node.name] then
          add(errs, child(npath, "name"), ("duplicate node name %q (also nodes[%d])")
            :format(node.name, seen[node.name]))
        else
          seen[node.name] = i
        end
      end
      if node.role == "primary" then
        if primary_at then
          add(errs, child(npath, "role"), ("a cluster has at most one primary (nodes[%d] is one)")
            :format(primary_at))
        else
          primary_at = i
        end
      end
      nodes[#nodes + 1] = node
    end
  end
  return nodes
end

-- Lowercased (the classifier reports unquoted identifiers folded to lower
-- case, as PostgreSQL does) and checked for duplicates within the cluster;
-- ownership across clusters is checked by the caller.
local function check_schemas(errs, path, raw)
  local schemas = {}
  if raw == nil then return schemas end
  if type(raw) ~= "table" or array_length(raw) == nil then
    expected(errs, path, "an array of schema names", raw)
    return schemas
  end
  local seen = {}
  for i = 1, #raw do
    local s = raw[i]
    if type(s) ~= "string" or s == "" then
      expected(errs, index(path, i), "a schema name", s)
    else
      local lower = s:lower()
      if seen[lower] then
        add(errs, index(path, i), ("duplicate schema %q"):format(lower))
      else
        seen[lower] = true
        schemas[#schemas + 1] = lower
      end
    end
  end
  return schemas
end

-- An array of strings each of which valid(s) accepts; what_list and
-- what_item describe them in errors.  Returns the valid ones.
local function check_string_list(errs, path, raw, what_list, what_item, valid)
  local out = {}
  if type(raw) ~= "table" or array_length(raw) == nil then
    expected(errs, path, what_list, raw)
    return out
  end
  for i = 1, #raw do
    local s = raw[i]
    if type(s) ~= "string" or not valid(s) then
      expected(errs, index(path, i), what_item, s)
    else
      out[#out + 1] = s
    end
  end
  return out
end

local function check_write_functions(errs, path, raw)
  if raw == nil then return {} end
  -- Schema-qualified names are allowed; the classifier matches the text.
  return check_string_list(errs, path, raw, "an array of lowercase function names",
    "a lowercase function name", function(f)
      return f:match("^[%l_][%l%d_%$]*$") or f:match("^[%l_][%l%d_%$]*%.[%l_][%l%d_%$]*$")
    end)
end

local BUDGET_FIELDS = {
  { key = "instructions", int = true, min = 0, positive = true },
  { key = "ms", min = 0, positive = true },
}
local HEALTH_FIELDS = {
  { key = "interval", min = 0.1 },
  { key = "timeout", min = 0, positive = true },
  { key = "fall", int = true, min = 1 },
  { key = "rise", int = true, min = 1 },
}


local FAILOVER_DEFAULTS = { mode = "none", write_wait = 5, promote_timeout = 30 }

-- Patroni REST API base URLs: http(s)://host:port, any member's.
local function check_patroni_urls(errs, path, raw)
  if type(raw) == "string" then raw = { raw } end
  if type(raw) == "table" and next(raw) == nil then
    add(errs, path, "expected at least one Patroni REST API URL")
    return {}
  end
  return check_string_list(errs, path, raw, 'Patroni REST API URLs (an array of "http://host:8008")',
    'a URL like "http://host:8008"', function(u) return u:match("^https?://[^/%s]+/?$") end)
end

local function check_failover(errs, path, raw)
  if raw == nil then return merge(FAILOVER_DEFAULTS, {}) end
  local out = merge(FAILOVER_DEFAULTS, check_number_fields(errs, path, raw, FAILOVER_FIELDS, true))
  if type(raw) == "table" then
    check_keys(errs, path, raw, { "mode", "write_wait", "promote_timeout", "patroni" })
    if raw.mode ~= nil then
      out.mode = check_choice(errs, child(path, "mode"), raw.mode, FAILOVER_MODES)
    end
    if out.mode == "patroni" or raw.patroni ~= nil then
      out.patroni = check_patroni_urls(errs, child(path, "patroni"), raw.patroni)
      if out.mode ~= "patroni" then
        add(errs, child(path, "patroni"), 'only with mode = "patroni"')
      end
    end
  end
  return out
end

local function check_clusters(errs, raw, base_pool)
  local list, by_name, owner = {}, {}, {}
  if raw == nil then
    add(errs, "clusters", "required (a map of cluster name -> cluster)")
    return list, by_name, owner
  end
  if type(raw) ~= "table" then
    expected(errs, "clusters", "a map of cluster name -> cluster", raw)
    return list, by_name, owner
  end
  local names = sorted_keys(raw)
  if #names == 0 then
    add(errs, "clusters", "expected at least one cluster")
    return list, by_name, owner
  end
  for _, name in ipairs(names) do
    local path = child("clusters", name)
    local c = raw[name]
    if type(name) ~= "string" or not name:match("^[%w_]+$") then
      add(errs, path, "invalid cluster name (expected letters, digits and _)")
    elseif type(c) ~= "table" then
      expected(errs, path, "a cluster table", c)
    else
      check_keys(errs, path, c, CLUSTER_KEYS)
      local cluster = { name = name }
      cluster.nodes = check_nodes(errs, child(path, "nodes"), c.nodes, name)
      for _, node in ipairs(cluster.nodes) do
        if node.role == "primary" then cluster.primary = node.name end
      end
      cluster.schemas = check_schemas(errs, child(path, "schemas"), c.schemas)
      for i, s in ipairs(cluster.schemas) do
        if owner[s] then
          add(errs, index(child(path, "schemas"), i), ("schema %q is already owned by cluster %q")
            :format(s, owner[s]))
        else
          owner[s] = name
        end
      end
      cluster.failover = check_failover(errs, child(path, "failover"), c.failover)
      local over = check_pool_fields(errs, child(path, "pool"), c.pool)
      cluster.pool = merge(base_pool, over)
      if c.pool ~= nil and next(over) ~= nil then
        check_pool_relations(errs, child(path, "pool"), cluster.pool)
      end
      list[#list + 1] = cluster
      by_name[name] = cluster
    end
  end
  return list, by_name, owner
end

-- ------------------------------------------------------------------ API

-- config.validate(raw, config_dir, home) -> cfg | nil, errors
-- raw: the table a config file returned.  config_dir: directory relative
-- paths are resolved against (default: the working directory).  home: the
-- switchyard home holding policies/ (default: $SWITCHYARD_HOME, then the
-- directory this file was installed under).
function config.validate(raw, config_dir, home)
  local errs = {}
  if type(raw) ~= "table" then
    return nil, { "config: expected a table, got " .. describe(raw) }
  end
  config_dir = resolve.absolute(config_dir or ".")
  home = resolve.absolute(home or config.default_home())

  check_keys(errs, "", raw, TOP_KEYS)
  local cfg = config.defaults()
  cfg.config_dir = config_dir
  cfg.home = home

  -- The top-level pool first: clusters merge their overrides over it.
  cfg.pool = merge(POOL_DEFAULTS, check_pool_fields(errs, "pool", raw.pool))
  check_pool_relations(errs, "pool", cfg.pool)

  cfg.clusters, cfg.cluster_by_name, cfg.schema_owner = check_clusters(errs, raw.clusters, cfg.pool)

  local names = {}
  for i, c in ipairs(cfg.clusters) do names[i] = c.name end
  local dc = raw.default_cluster
  if dc == nil then
    if #cfg.clusters == 1 then
      cfg.default_cluster = cfg.clusters[1].name
    elseif #cfg.clusters > 1 then
      add(errs, "default_cluster", ("required when there is more than one cluster (one of: %s)")
        :format(table.concat(names, ", ")))
    end
  elseif type(dc) ~= "string" then
    expected(errs, "default_cluster", "a cluster name", dc)
  elseif not cfg.cluster_by_name[dc] then
    -- A cluster that failed validation is still a name the user wrote.
    if type(raw.clusters) ~= "table" or raw.clusters[dc] == nil then
      add(errs, "default_cluster", ("no cluster named %q (clusters: %s)")
        :format(dc, table.concat(names, ", ")))
    end
  else
    cfg.default_cluster = dc
  end

  if raw.policy ~= nil then
    cfg.policy = check_string(errs, "policy", raw.policy,
      "a built-in policy name or a path to a .lua file")
  end
  if cfg.policy then
    local path, err = resolve.file(cfg.policy, config_dir, home, "policies")
    if path then cfg.policy_path = path else add(errs, "policy", err) end
  end

  if raw.policy_options ~= nil then
    if type(raw.policy_options) ~= "table" then
      expected(errs, "policy_options", "a table", raw.policy_options)
    else
      cfg.policy_options = raw.policy_options
    end
  end

  if raw.query_timeout ~= nil then
    cfg.query_timeout = check_number(errs, "query_timeout", raw.query_timeout, { min = 0 })
      or DEFAULTS.query_timeout
  end
  if raw.retry_reads ~= nil then
    local v = check_boolean(errs, "retry_reads", raw.retry_reads)
    if v ~= nil then cfg.retry_reads = v end
  end
  if raw.watch ~= nil then
    local v = check_boolean(errs, "watch", raw.watch)
    if v ~= nil then cfg.watch = v end
  end
  cfg.write_functions = check_write_functions(errs, "write_functions", raw.write_functions)
  cfg.route_budget = check_settings(errs, "route_budget", raw.route_budget, BUDGET_FIELDS,
    DEFAULTS.route_budget)
  cfg.health = check_settings(errs, "health", raw.health, HEALTH_FIELDS, DEFAULTS.health)

  if raw.log_level ~= nil then
    local ok = false
    for _, l in ipairs(LOG_LEVELS) do
      if raw.log_level == l then ok = true end
    end
    if ok then
      cfg.log_level = raw.log_level
    else
      expected(errs, "log_level", "one of " .. table.concat(LOG_LEVELS, ", "), raw.log_level)
    end
  end

  -- After the clusters: the auth query names one of them.
  cfg.proxy = proxy_section.check(errs, raw.proxy, cfg, raw.clusters)

  if #errs > 0 then return nil, errs end
  return cfg
end

-- The home a caller did not pass: $SWITCHYARD_HOME, else two directories
-- above this file (it lives in <home>/lua/switchyard/).
function config.default_home()
  local env = os.getenv("SWITCHYARD_HOME")
  if env and env ~= "" then return env end
  local src = debug.getinfo(1, "S").source
  if src:sub(1, 1) == "@" then
    local dir = resolve.dirname(resolve.absolute(src:sub(2)))
    return resolve.normalize(dir .. "/../..")
  end
  return "."
end

-- Only what a config plausibly needs to compute values.  Library tables are
-- copies so a config cannot alter the host's string or math functions.
local function sandbox()
  local function copy(t)
    local c = {}
    for k, v in pairs(t) do c[k] = v end
    return c
  end
  local env = {
    string = copy(string), math = copy(math), table = copy(table),
    os = { getenv = os.getenv, time = os.time, date = os.date, clock = os.clock },
    tonumber = tonumber, tostring = tostring, type = type,
    pairs = pairs, ipairs = ipairs, next = next, select = select,
    unpack = unpack, error = error, assert = assert,
  }
  -- Reading an undefined global is almost always a typo (retry_reads = tru),
  -- so it is an error with the config's file:line rather than a silent nil.
  return setmetatable(env, {
    __index = function(_, name)
      error(("unknown name %q (the config sees only string, math, table, os.getenv, "
        .. "tonumber, tostring, type, pairs, ipairs, next, select, unpack, error, assert)")
        :format(tostring(name)), 2)
    end,
  })
end

-- A config that loops forever must not hang a reload.
local LOAD_INSTRUCTION_LIMIT = 50000000

-- config.load(path, home) -> cfg | nil, errors
function config.load(path, home)
  if type(path) ~= "string" or path == "" then
    return nil, { "config: expected a file path, got " .. describe(path) }
  end
  -- Mode "t": a config is source text, never precompiled bytecode.
  local chunk, err = loadfile(path, "t")
  if not chunk then return nil, { err } end
  setfenv(chunk, sandbox())

  -- Count hooks do not fire inside compiled traces, so the chunk runs
  -- interpreted; a config is run once, speed is irrelevant.
  local has_jit, jit = pcall(require, "jit")
  if has_jit and jit.off then jit.off(chunk, true) end
  -- Inside the engine a C hook already budgets every call (gethook then
  -- reports an "external hook"); only plain Lua callers get this one.
  local old_hook = debug.gethook()
  if old_hook == nil then
    debug.sethook(function()
      -- Level 2 points at the config line that was running.
      error(("the config ran for more than %d instructions (an endless loop?)")
        :format(LOAD_INSTRUCTION_LIMIT), 2)
    end, "", LOAD_INSTRUCTION_LIMIT)
  end
  local ok, raw = pcall(chunk)
  if old_hook == nil then
    debug.sethook()
  end

  if not ok then return nil, { tostring(raw) } end
  if type(raw) ~= "table" then
    return nil, { ("%s: the config must return a table, got %s"):format(path, describe(raw)) }
  end
  local abs = resolve.absolute(path)
  local cfg, errs = config.validate(raw, resolve.dirname(abs), home)
  if not cfg then return nil, errs end
  cfg.config_path = abs
  return cfg
end

return config

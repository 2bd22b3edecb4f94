-- Read/write split inside one cluster: the decision read_write_split.lua
-- and schema_routing.lua share (they differ only in how they pick the
-- cluster).  A copied policy can require it the same way.
--
-- The rules, in order:
--   1. q.hints.node = "main.replica1" runs the statement on that node
--      (rejected if it is unknown, down, the node that just failed, or a
--      replica asked to run a write).
--   2. q.hints.route = "primary" sends it to the cluster's primary.
--   3. Anything that may write or needs session state goes to the primary:
--      kinds write, ddl, session, transaction and unknown; reads flagged
--      locking_read, writable_cte, write_function, temp_table or
--      advisory_lock; and every statement while a transaction is open
--      (q.in_tx), because the transaction lives on the primary.
--      Exception: BEGIN READ ONLY (flags.read_only_tx outside a
--      transaction) opens a transaction that cannot write, so it is
--      balanced like a read.
--   4. Reads go to a healthy replica chosen by the balancer, never the node
--      a retried read just failed on (q.retry.failed), among the replicas
--      the read's consistency level allows:
--        eventual  any healthy replica (the default);
--        bounded   replicas whose replay lag is known and within
--                  max_lag_ms and/or max_lag_bytes (from health polling);
--        strong    none: the primary;
--        read_your_writes
--                  after the session's last write, only replicas whose
--                  polled replay position has passed it (q.session.write_lsn;
--                  -1 while no poll has bounded it yet: the primary);
--                  a session that never wrote reads like eventual.
--      The level comes from a hint (/* sy: consistency=bounded */), else
--      the session variable (SET switchyard.consistency = 'bounded'
--      through the proxy, sy_session_set() embedded), else the option;
--      max_lag_ms / max_lag_bytes the same way.
--   5. No replica to take it (none healthy, or the balancer found none good
--      enough): the primary, unless options.fallback_to_primary = false.
--   6. No usable primary: the statement is rejected with SQLSTATE 08006 so
--      the client sees why instead of a timeout; while a managed failover
--      can still give the cluster one (cluster.failover_wait), it waits for
--      it instead ({ wait = seconds }), and runs on the new primary.
--
-- Options (policy_options in the config):
--   balancer            built-in name ("round_robin", "weighted",
--                       "least_connections", "response_time", "health_aware")
--                       or a path to a .lua file relative to the config;
--                       default "round_robin"
--   balancer_options    table handed to the balancer; default {}
--   fallback_to_primary boolean, default true
--   consistency         "eventual" (default), "bounded", "strong" or
--                       "read_your_writes"
--   max_lag_ms          bound for "bounded" reads; default 1000 when
--                       neither bound is given
--   max_lag_bytes       bound for "bounded" reads, in WAL bytes
--
-- This runs for every query, so the common path allocates nothing: the
-- candidate list is one reused array and per-cluster balancer state is
-- looked up once and remembered.

local resolve = require("switchyard.resolve")

local split = {}

local SPLIT_OPTIONS = {
  balancer = true, balancer_options = true, fallback_to_primary = true,
  consistency = true, max_lag_ms = true, max_lag_bytes = true,
}

local LEVELS = { eventual = true, bounded = true, strong = true, read_your_writes = true }

-- True when the statement must run on the primary (rule 3).  Flags that
-- make even a SELECT unsafe on a replica: locking_read, writable_cte,
-- write_function, temp_table, advisory_lock.
local function needs_primary(q)
  local kind, f = q.kind, q.flags
  if q.in_tx then return true end
  if kind == "read" then
    if f == nil then return false end
    return (f.locking_read or f.writable_cte or f.write_function or f.temp_table
      or f.advisory_lock) and true or false
  end
  if kind == "transaction" then
    return not (f and f.read_only_tx)
  end
  return true
end
split.needs_primary = needs_primary

local function describe_option(v)
  if type(v) == "string" then return ("string %q"):format(v) end
  return type(v)
end

-- split.new(sy [, extra_options]) -> router
-- sy is the engine facade (require("switchyard")); options are read from
-- sy.options.  extra_options is a set of further option names the calling
-- policy accepts and checks itself, so a misspelt option is still refused.
-- Loading the balancer here means a bad balancer name refuses the policy at
-- load time, with the reason, and never fails a query later.
function split.new(sy, extra_options)
  local options = sy.options or {}
  local config_dir = sy.config and sy.config.config_dir
  local balancer_name = options.balancer or "round_robin"
  local balancer_options = options.balancer_options or {}
  local fallback = options.fallback_to_primary ~= false
  local default_level = options.consistency or "eventual"
  local default_max_ms, default_max_bytes = options.max_lag_ms, options.max_lag_bytes
  if default_max_ms == nil and default_max_bytes == nil then default_max_ms = 1000 end

  local router = {}

  -- Raised as errors: the engine calls this at (re)load and refuses the
  -- policy with the message, keeping the previous one serving.
  function router.selftest()
    for k, v in pairs(options) do
      if not SPLIT_OPTIONS[k] and not (extra_options and extra_options[k]) then
        error(("policy_options.%s: unknown option"):format(tostring(k)), 0)
      end
      if k == "balancer" and (type(v) ~= "string" or v == "") then
        error("policy_options.balancer: expected a balancer name or a path to a .lua file, got "
          .. describe_option(v), 0)
      elseif k == "balancer_options" and type(v) ~= "table" then
        error("policy_options.balancer_options: expected a table, got " .. describe_option(v), 0)
      elseif k == "fallback_to_primary" and type(v) ~= "boolean" then
        error("policy_options.fallback_to_primary: expected true or false, got "
          .. describe_option(v), 0)
      elseif k == "consistency" and not LEVELS[v] then
        error('policy_options.consistency: expected "eventual", "bounded", "strong" or '
          .. '"read_your_writes", got ' .. describe_option(v), 0)
      elseif (k == "max_lag_ms" or k == "max_lag_bytes") and not (type(v) == "number" and v >= 0) then
        error(("policy_options.%s: expected a number >= 0, got %s"):format(k, describe_option(v)), 0)
      end
    end
    local b = resolve.module(balancer_name, config_dir, "balancers")
    if type(b.pick) ~= "function" then
      error(("balancer %s has no pick(candidates, q, state, options) function")
        :format(balancer_name), 0)
    end
    if b.check then b.check(balancer_options) end
  end

  -- Invalid options would make every query fail later; better to refuse now.
  router.selftest()
  local balancer = resolve.module(balancer_name, config_dir, "balancers")
  local pick = balancer.pick

  -- Balancer state persists across reloads in sy.shared, one namespace per
  -- balancer (a different balancer after a reload starts clean) and one
  -- table per cluster's replica set.
  local shared = sy.shared
  local ns_key = "balancer:" .. balancer_name
  local ns = shared[ns_key]
  if ns == nil then
    ns = {}
    shared[ns_key] = ns
  end
  local states = {}
  local function state_for(cluster_name)
    local s = states[cluster_name]
    if s == nil then
      local key = cluster_name .. ":replica"
      s = ns[key]
      if s == nil then
        s = {}
        ns[key] = s
      end
      states[cluster_name] = s
    end
    return s
  end

  local candidates, ncandidates = {}, 0

  -- Called only under `if sy.tracing`: a decision that is not traced
  -- pays neither the call nor its arguments.
  local function trace(msg, ...)
    sy.trace(msg:format(...))
  end

  local function primary_of(cluster, failed_name)
    local p = cluster.primary
    -- The usual answer first: one healthy primary, no read retried on it.
    if p and p.healthy and not cluster.split_brain
      and (failed_name == nil or p.name ~= failed_name) then
      return p
    end
    if cluster.split_brain then
      return nil, ("switchyard: cluster %q has more than one primary (%s); writes are refused until "
        .. "one remains"):format(cluster.name, table.concat(cluster.split_brain, ", ")), "08006"
    end
    if (p == nil or not p.healthy) and cluster.failover_wait then
      -- A managed failover is under way: the statement waits for the new
      -- primary (up to failover.write_wait), then is routed again.
      if sy.tracing then
        trace("no primary in cluster %s: waiting up to %g s for the failover", cluster.name,
          cluster.failover_wait)
      end
      return { wait = cluster.failover_wait }
    end
    if p == nil then
      return nil, ("switchyard: cluster %q has no primary to run this statement"):format(cluster.name),
        "08006"
    end
    if not p.healthy then
      return nil, ("switchyard: primary %s of cluster %q is down"):format(p.name, cluster.name),
        "08006"
    end
    if p.name == failed_name then
      return nil, ("switchyard: no other node of cluster %q can take the retried read")
        :format(cluster.name), "08006"
    end
    return p
  end

  local function pinned(q, name, failed_name)
    local node = q.topology.by_name[name]
    if node == nil then
      return nil, ("switchyard: hint node=%s names no node"):format(name), "42704"
    end
    if not node.healthy or node.name == failed_name then
      return nil, ("switchyard: hinted node %s is down"):format(name), "08006"
    end
    if node.role ~= "primary" and needs_primary(q) then
      return nil, ("switchyard: hinted node %s is a replica and cannot run this statement")
        :format(name), "25006"
    end
    return node
  end

  -- A read's level (hint, then session variable, then option: read in
  -- route) checked, with its bounds: max_lag_ms / max_lag_bytes the same
  -- way for bounded, the session's write position for read_your_writes.
  -- Returns nil, message, sqlstate for a level or bound that makes no sense.
  local function consistency_of(q, level)
    if not LEVELS[level] then
      return nil, ('switchyard: unknown consistency level "%s" (eventual, bounded, strong or '
        .. 'read_your_writes)'):format(tostring(level)), "22023"
    end
    if level == "read_your_writes" then return level, q.session.write_lsn end
    if level ~= "bounded" then return level end
    local hints, vars = q.hints, q.session.vars
    local ms = hints.max_lag_ms or vars.max_lag_ms
    local bytes = hints.max_lag_bytes or vars.max_lag_bytes
    if ms == nil and bytes == nil then return level, default_max_ms, default_max_bytes end
    local max_ms, max_bytes = tonumber(ms), tonumber(bytes)
    if (ms ~= nil and not max_ms) or (bytes ~= nil and not max_bytes) then
      return nil, ('switchyard: max_lag_ms and max_lag_bytes must be numbers, got "%s" and "%s"')
        :format(tostring(ms), tostring(bytes)), "22023"
    end
    return level, max_ms, max_bytes
  end

  local function within(r, max_ms, max_bytes)
    if max_ms then
      local lag = r.lag_ms
      if lag == nil or lag > max_ms then return false end
    end
    if max_bytes then
      local lag = r.lag_bytes
      if lag == nil or lag > max_bytes then return false end
    end
    return true
  end

  -- The engine's shared "none" table (sy.empty): q.flags and q.hints of a
  -- plain statement are it, which one comparison tells.
  local empty = sy.empty

  -- router.route(q, cluster) -> node | nil, message, sqlstate
  -- router.route_in(cluster) -> route(q) for that one cluster: the same
  -- rules, and one call less per query than wrapping router.route.
  -- sy.tracing is true only under `switchyard route`: the explanations
  -- cost nothing when queries are served.
  local function make_route(fixed_cluster)
    return function(q, cluster)
      if fixed_cluster then cluster = fixed_cluster end
      local retry = q.retry
      local failed_name = retry and retry.failed and retry.failed.name
      local hints = q.hints
      if hints ~= empty and hints then
        local hinted = hints.node
        if hinted then
          if sy.tracing then
            trace("hint node=%s", hinted)
          end
          return pinned(q, hinted, failed_name)
        end
        if hints.route == "primary" then
          if sy.tracing then
            trace("hint route=primary: the primary of cluster %s", cluster.name)
          end
          return primary_of(cluster, failed_name)
        end
      end
      -- A plain read outside a transaction needs no closer look.
      if (q.in_tx or q.kind ~= "read" or q.flags ~= empty) and needs_primary(q) then
        if sy.tracing then
          trace("%s statement%s: needs the primary of cluster %s", q.kind,
            q.in_tx and " inside a transaction" or "", cluster.name)
        end
        return primary_of(cluster, failed_name)
      end

      -- The common case, eventual, costs two lookups (this runs per query).
      local level = hints and hints.consistency or q.session.vars.consistency or default_level
      local bounded, need_lsn, max_ms, max_bytes = false, false, nil, nil
      if level ~= "eventual" then
        level, max_ms, max_bytes = consistency_of(q, level)
        if level == nil then return nil, max_ms, max_bytes end
        if level == "strong" then
          if sy.tracing then
            trace("strong read: the primary of cluster %s", cluster.name)
          end
          return primary_of(cluster, failed_name)
        end
        bounded = level == "bounded"
        need_lsn = level == "read_your_writes" and max_ms
        if need_lsn and need_lsn < 0 then
          if sy.tracing then
            trace("read_your_writes: the session's last write is not bounded by a poll yet: the primary")
          end
          return primary_of(cluster, failed_name)
        end
      end
      local replicas = cluster.replicas
      local n = 0
      for i = 1, #replicas do
        local r = replicas[i]
        if r.healthy and (failed_name == nil or r.name ~= failed_name)
          and (not bounded or within(r, max_ms, max_bytes))
          and (not need_lsn or (r.wal_position or -1) >= need_lsn) then
          n = n + 1
          candidates[n] = r
        end
      end
      if ncandidates > n then
        -- Clear what a longer list left behind so #candidates is right.
        for i = n + 1, ncandidates do candidates[i] = nil end
      end
      ncandidates = n

      if n > 0 then
        local name = cluster.name
        local node = pick(candidates, q, states[name] or state_for(name), balancer_options)
        if node then
          if sy.tracing then
            trace("read: %d healthy replica(s) of cluster %s; %s picked %s", n, cluster.name,
              balancer_name, node.name)
          end
          return node
        end
      end
      if sy.tracing then
        trace("read: no replica of cluster %s can take it (%d healthy)", cluster.name, n)
      end
      if not fallback then
        return nil, ("switchyard: no healthy replica in cluster %q for this read"):format(cluster.name),
          "08006"
      end
      return primary_of(cluster, failed_name)
    end
  end
  router.route = make_route(nil)
  function router.route_in(cluster)
    return make_route(cluster)
  end

  return router
end

return split

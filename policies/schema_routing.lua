-- Several clusters, each owning some schemas (clusters.<name>.schemas in
-- the config).  A statement goes to the cluster owning the first schema it
-- mentions that has an owner; a statement naming no owned schema goes to
-- default_cluster.  Within the cluster, the read/write split of
-- policies/lib/split.lua applies (primary for writes, balanced replicas for
-- reads).
--
-- Hints: /* sy: schema=sales */ routes as if the statement named that
-- schema (for unqualified names resolved by search_path), and
-- /* sy: cluster=orders */ names the cluster outright.
--
-- policy_options: those of read_write_split.lua, plus
--   reject_cross_cluster = false  -- true: refuse a statement whose schemas
--                                 -- belong to different clusters (it could
--                                 -- not run on any one of them)

local sy = require("switchyard")
local split = require("lib.split")

local router = split.new(sy, { reject_cross_cluster = true })
local reject_cross = sy.options and sy.options.reject_cross_cluster == true

local policy = {}

-- The name of the cluster for q, or nil and a rejection.
local function cluster_for(q, topology)
  local owner = topology.schema_owner
  local hints = q.hints
  if hints then
    if hints.cluster then return hints.cluster end
    if hints.schema then
      return owner[hints.schema:lower()] or topology.default_cluster
    end
  end
  local schemas = q.schemas
  local found
  if schemas then
    for i = 1, #schemas do
      local c = owner[schemas[i]]
      if c then
        if not reject_cross then return c end
        if found and c ~= found then
          return nil, ("switchyard: this statement uses schemas of clusters %q and %q; "
            .. "a statement runs on one cluster"):format(found, c), "0A000"
        end
        found = found or c
      end
    end
  end
  return found or topology.default_cluster
end

function policy.route(q)
  local topology = q.topology
  local name, err, sqlstate = cluster_for(q, topology)
  if not name then return nil, err, sqlstate end
  local cluster = topology.clusters[name]
  if cluster == nil then
    return nil, ("switchyard: hint cluster=%s names no cluster"):format(name), "42704"
  end
  if sy.tracing then
    sy.trace(("schemas {%s}: cluster %s"):format(table.concat(q.schemas, ", "), name))
  end
  return router.route(q, cluster)
end

function policy.selftest()
  router.selftest()
  local v = sy.options and sy.options.reject_cross_cluster
  if v ~= nil and type(v) ~= "boolean" then
    error("policy_options.reject_cross_cluster: expected true or false, got " .. type(v), 0)
  end
end

return policy

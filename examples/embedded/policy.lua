-- A custom routing policy, as a team owning its data would write one: two
-- rules of its own in front of the built-in read/write split.
--
--   1. Firewall: UPDATE or DELETE without a WHERE clause is refused with
--      SQLSTATE 42501 (insufficient_privilege) before it reaches a server.
--   2. Tenant pinning: a read tagged with a tenant, by hint
--      (/* sy: tenant=acme */ SELECT ...) or by the session variable
--      "tenant" (sy_session_set), runs on the replica that
--      policy_options.tenant_replicas names for it, while that replica is
--      healthy.  Writes of every tenant still go to the primary.
--   3. Everything else: the built-in split (policies/lib/split.lua) --
--      writes and transactions on the primary, reads balanced over the
--      replicas with policy_options.balancer (round_robin here).
--
-- policy_options (besides those of lib/split.lua):
--   tenant_replicas = { acme = "main.replica2" }  -- tenant -> "cluster.node"

local sy = require("switchyard")
local split = require("lib.split")

-- Declaring tenant_replicas as ours keeps split's check of misspelt options.
local router = split.new(sy, { tenant_replicas = true })
local tenant_replicas = sy.options.tenant_replicas or {}

local policy = {}

-- The verb of an UPDATE or DELETE that has no WHERE, else nil.  A coarse
-- text rule (it does not parse string literals), which is what a firewall
-- of this kind needs: false alarms are refused loudly, never run silently.
local function unbounded_write(sql)
  local s = sql:lower():gsub("/%*.-%*/", " "):gsub("%-%-[^\n]*", " ")
  local verb = s:match("^[%s(]*(%a+)")
  if verb ~= "update" and verb ~= "delete" then return nil end
  if s:find("%f[%w_]where%f[^%w_]") then return nil end
  return verb
end

function policy.route(q)
  -- Only writes can be unbounded; reads never pay for the text scan.
  if q.kind == "write" then
    local verb = unbounded_write(q.sql)
    if verb then
      return nil, ("firewall: %s without WHERE is not allowed"):format(verb:upper()), "42501"
    end
  end

  local tenant = q.hints.tenant or q.session.vars.tenant
  if tenant and not split.needs_primary(q) then
    local node = q.topology.by_name[tenant_replicas[tenant]]
    if node and node.healthy then return node end
    -- No pinned replica (or it is down): the tenant's reads are balanced.
  end

  return router.route(q, q.topology.clusters[q.topology.default_cluster])
end

-- Runs at every (re)load: a typo in tenant_replicas refuses the config
-- with the reason instead of silently balancing that tenant.
function policy.selftest()
  router.selftest()
  if type(tenant_replicas) ~= "table" then
    error("policy_options.tenant_replicas: expected a map of tenant -> node name", 0)
  end
  for tenant, name in pairs(tenant_replicas) do
    local node = sy.topology.by_name[name]
    if node == nil then
      error(("policy_options.tenant_replicas.%s: no node named %q"):format(tostring(tenant),
        tostring(name)), 0)
    end
    if node.role == "primary" then
      error(("policy_options.tenant_replicas.%s: %s is a primary; name a replica")
        :format(tostring(tenant), name), 0)
    end
  end
end

return policy

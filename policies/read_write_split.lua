-- The default policy: one cluster (the config's default_cluster), writes
-- and transactions on its primary, reads spread over its healthy replicas.
-- The rules live in policies/lib/split.lua (shared with schema_routing.lua);
-- read them there.
--
-- policy_options:
--   balancer = "round_robin"   -- or weighted, least_connections,
--                              -- response_time, health_aware, or "my_lb.lua"
--   balancer_options = {}      -- handed to the balancer
--   fallback_to_primary = true -- reads go to the primary when no replica can
--
-- To customise: copy this file next to your config, edit route(), and set
-- policy = "my_policy.lua".  Hints in SQL comments steer single statements:
--   /* sy: route=primary */  or  /* sy: node=main.replica1 */

local sy = require("switchyard")
local split = require("lib.split")

local router = split.new(sy)

local policy = {}

-- route(q) for the default cluster.  The cluster tables live as long as
-- this load of the policy (a reload loads it again), so it is looked up
-- once; route_in binds it without a call of our own in between.
policy.route = router.route_in(sy.topology.clusters[sy.topology.default_cluster])

-- Refuses a (re)load whose options are wrong.
policy.selftest = router.selftest

return policy

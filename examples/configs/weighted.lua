-- Replicas of different sizes: replica1 is a big machine and takes three
-- reads out of every four, replica2 the fourth.  Smooth weighted round robin
-- interleaves them (1, 1, 2, 1, 1, 1, 2, 1 ...) rather than sending bursts.
--
-- The weights live on the nodes; to try another split without touching the
-- node list, set policy_options.balancer_options.weights instead:
--   balancer_options = { weights = { replica1 = 1, replica2 = 1 } }
--
-- Ports come from the environment (defaults: a local 5432/5433/5434 setup):
--   SY_PRIMARY_PORT  SY_REPLICA1_PORT  SY_REPLICA2_PORT
--   SY_HOST (127.0.0.1)  SY_DBNAME (postgres)  SY_USER (postgres)

local function env(name, default)
  local v = os.getenv(name)
  if v == nil or v == "" then return default end
  return v
end

local function conninfo(port_var, default_port)
  return ("host=%s port=%s dbname=%s user=%s connect_timeout=5"):format(
    env("SY_HOST", "127.0.0.1"), env(port_var, default_port),
    env("SY_DBNAME", "postgres"), env("SY_USER", "postgres"))
end

return {
  clusters = {
    main = {
      nodes = {
        { name = "primary", role = "primary", conninfo = conninfo("SY_PRIMARY_PORT", "5432") },
        { name = "replica1", role = "replica", weight = 3, tags = { size = "xl" },
          conninfo = conninfo("SY_REPLICA1_PORT", "5433") },
        { name = "replica2", role = "replica", weight = 1, tags = { size = "m" },
          conninfo = conninfo("SY_REPLICA2_PORT", "5434") },
      },
      -- The big replica can hold more connections; pools are per node, so
      -- this cluster-wide override applies to each of its nodes.
      pool = { max = 30 },
    },
  },
  policy_options = { balancer = "weighted" },
  pool = { min = 2, max = 10 },
}

-- The most common setup: one cluster, a primary and two streaming replicas.
-- Writes, DDL and transactions go to the primary; reads take turns on the
-- replicas (round robin) and fall back to the primary when no replica is
-- healthy.  SQL hints steer single statements:
--   /* sy: route=primary */ SELECT ...       read your own write
--   /* sy: node=main.replica2 */ SELECT ...  one named node
--
-- Ports come from the environment (defaults: a local 5432/5433/5434 setup):
--   SY_PRIMARY_PORT  SY_REPLICA1_PORT  SY_REPLICA2_PORT
--   SY_HOST (127.0.0.1)  SY_DBNAME (postgres)  SY_USER (postgres)
--
-- Try it without a server:
--   switchyard check examples/configs/read_write_split.lua
--   switchyard route examples/configs/read_write_split.lua 'SELECT * FROM t'

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
        { name = "replica1", role = "replica", conninfo = conninfo("SY_REPLICA1_PORT", "5433") },
        { name = "replica2", role = "replica", conninfo = conninfo("SY_REPLICA2_PORT", "5434") },
      },
    },
  },
  policy = "read_write_split",          -- the built-in default, named for clarity
  policy_options = {
    balancer = "round_robin",
    fallback_to_primary = true,         -- reads survive losing every replica
  },
  pool = { min = 2, max = 20, acquire_timeout = 5 },
  query_timeout = 30,                   -- seconds; 0 = no limit
  retry_reads = true,                   -- a read that hits a dead replica runs once more elsewhere
}

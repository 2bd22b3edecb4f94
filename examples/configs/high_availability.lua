-- One cluster run for availability: nobody says which node is the primary
-- (health polling finds it, and follows a failover done by someone else),
-- switchyard itself promotes a replica when the primary dies, and reads
-- after a session's own write never see older data.
--
--   - role = "auto" (the default): pg_is_in_recovery() decides, polled
--     every 0.25 s; 3 failed polls mark a node down, 1 good one up.
--   - failover.mode = "managed": when the primary is down, the replica that
--     replayed the most WAL (then the highest priority) is promoted with
--     pg_promote(), the other replica is pointed at it, the old primary is
--     fenced until an operator enables it (admin console: ENABLE main.primary).
--     Writes that arrive meanwhile wait up to write_wait seconds.
--   - consistency = "read_your_writes": a session's reads after its write
--     go to replicas that have replayed it, otherwise to the primary.
--     Other levels per statement: /* sy: consistency=bounded max_lag_ms=200 */,
--     /* sy: consistency=strong */, or SET switchyard.consistency = '...'.
--
-- For "no acknowledged write lost" the servers need synchronous replication
-- (synchronous_standby_names = 'ANY 1 (*)', synchronous_commit = on).
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
        { name = "primary", conninfo = conninfo("SY_PRIMARY_PORT", "5432") },
        { name = "replica1", conninfo = conninfo("SY_REPLICA1_PORT", "5433"), priority = 2 },
        { name = "replica2", conninfo = conninfo("SY_REPLICA2_PORT", "5434") },
      },
      failover = { mode = "managed", write_wait = 10 },
    },
  },
  policy_options = { consistency = "read_your_writes" },
  health = { interval = 0.25, timeout = 1, fall = 3, rise = 1 },
  pool = { min = 1, max = 20 },
}

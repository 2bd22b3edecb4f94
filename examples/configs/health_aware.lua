-- Reads go where the replicas are healthiest.  Each replica gets a score
-- from 0 to 100 out of its live figures (latency, error rate, queries in
-- flight, replication lag); replicas under the threshold get no reads, the
-- others share them in proportion to score x weight.  A replica that slows
-- down or falls behind sheds load gradually instead of all at once, and
-- when none qualifies reads fall back to the primary.
--
-- The knobs (policies/balancers/health_aware.lua has the formula):
--   threshold       minimum score for any reads (0-100)
--   max_lag_ms      hard limit: a replica further behind gets nothing
--   latency_ref_ms  the latency that halves a replica's score
--   error_weight    how hard errors count (an exponent; 0 ignores them)
--   lag_weight      how hard replication lag counts
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
        { name = "replica1", role = "replica", conninfo = conninfo("SY_REPLICA1_PORT", "5433") },
        { name = "replica2", role = "replica", conninfo = conninfo("SY_REPLICA2_PORT", "5434") },
      },
    },
  },
  policy_options = {
    balancer = "health_aware",
    balancer_options = {
      threshold = 40,
      max_lag_ms = 5000,       -- five seconds behind: no reads at all
      latency_ref_ms = 50,     -- this application expects fast answers
      error_weight = 4,
      lag_weight = 2,
    },
    fallback_to_primary = true,
  },
  -- Notice a dead replica quickly and retry its reads elsewhere.
  pool = { min = 2, max = 10, connect_timeout = 2, reconnect_max = 5 },
  retry_reads = true,
}

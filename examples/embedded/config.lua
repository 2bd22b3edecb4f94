-- Config of the embedded example: one cluster, a primary and two streaming
-- replicas, routed by the custom policy next to this file.
--
-- The servers' ports come from the environment, so the same file runs
-- against a local setup (the defaults) or a throwaway test bed, whose CLI
-- exports exactly these variables:
--   SY_PRIMARY_PORT (5432)  SY_REPLICA1_PORT (5433)  SY_REPLICA2_PORT (5434)
--   SY_HOST (127.0.0.1)     SY_DBNAME (postgres)     SY_USER (postgres)

local function env(name, default)
  local v = os.getenv(name)
  if v == nil or v == "" then return default end
  return v
end

local function node(name, role, port_var, default_port)
  return {
    name = name,
    role = role,
    conninfo = ("host=%s port=%s dbname=%s user=%s connect_timeout=5"):format(
      env("SY_HOST", "127.0.0.1"), env(port_var, default_port),
      env("SY_DBNAME", "postgres"), env("SY_USER", "postgres")),
  }
end

return {
  clusters = {
    main = {
      nodes = {
        node("primary", "primary", "SY_PRIMARY_PORT", "5432"),
        node("replica1", "replica", "SY_REPLICA1_PORT", "5433"),
        node("replica2", "replica", "SY_REPLICA2_PORT", "5434"),
      },
    },
  },
  -- Relative to this file's directory.
  policy = "policy.lua",
  policy_options = {
    balancer = "round_robin",
    -- Tenant acme has a replica of its own for its reports.
    tenant_replicas = { acme = "main.replica2" },
  },
  pool = { min = 1, max = 4, acquire_timeout = 5 },
  query_timeout = 10,
  log_level = "warn",
  -- The example runs for a second; it has no use for file watching.
  watch = false,
}

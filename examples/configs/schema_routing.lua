-- Two clusters split by schema: "main" holds the application's own data and
-- "billing" owns the billing and invoices schemas.  A statement goes to the
-- cluster owning the first schema it names; one naming none goes to
-- default_cluster.  Inside each cluster the usual split applies (writes on
-- its primary, reads over its replicas).
--
--   SELECT * FROM billing.invoices          -> a billing replica
--   INSERT INTO billing.payments ...        -> billing.primary
--   SELECT * FROM users                     -> a main replica (default cluster)
--   /* sy: schema=billing */ SELECT ...     -> as if it named billing (for
--                                              names found by search_path)
--   /* sy: cluster=billing */ SELECT ...    -> billing, outright
--
-- reject_cross_cluster refuses a statement joining schemas of both clusters
-- (SQLSTATE 0A000): no single server could run it.
--
-- Ports come from the environment (defaults in parentheses):
--   main:    SY_PRIMARY_PORT (5432)  SY_REPLICA1_PORT (5433)  SY_REPLICA2_PORT (5434)
--   billing: SY_BILLING_PRIMARY_PORT (5442)  SY_BILLING_REPLICA1_PORT (5443)
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
      schemas = { "public", "app" },
    },
    billing = {
      nodes = {
        { name = "primary", role = "primary",
          conninfo = conninfo("SY_BILLING_PRIMARY_PORT", "5442") },
        { name = "replica1", role = "replica",
          conninfo = conninfo("SY_BILLING_REPLICA1_PORT", "5443") },
      },
      schemas = { "billing", "invoices" },
      -- Billing runs fewer, longer queries: a smaller pool, more patience.
      pool = { max = 5, acquire_timeout = 10 },
    },
  },
  default_cluster = "main",
  policy = "schema_routing",
  policy_options = {
    balancer = "round_robin",
    reject_cross_cluster = true,
  },
}

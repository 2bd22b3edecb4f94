-- One cluster whose failovers and switchovers belong to Patroni: switchyard
-- only follows it, and never promotes anything itself, so any number of
-- switchyard instances (proxies, embedded engines) can follow one Patroni
-- cluster side by side without knowing of each other.
--
--   - failover.mode = "patroni": every health interval (0.25 s here) the
--     cluster's roles are read from Patroni's REST API (GET /cluster, from
--     the first URL that answers).  Nodes are named like Patroni's members
--     (pg1, pg2, pg3), so they match by name.
--   - Patroni's leader becomes the primary once its own health poll says
--     pg_is_in_recovery() = false; a server that says it is primary while
--     Patroni names another leader gets no query at all.
--   - During a switchover, writes wait (up to write_wait seconds) for the
--     new leader, then run there.
--   - Patroni unreachable (garbage, errors, silence) for 3 rounds is a
--     patroni_down event; roles stay as last heard meanwhile.
--
-- Addresses come from the environment (defaults: a local three-node setup):
--   SY_PATRONI_URLS  comma-separated REST API URLs
--                    (http://127.0.0.1:8008,http://127.0.0.1:8009,http://127.0.0.1:8010)
--   SY_PG1_PORT  SY_PG2_PORT  SY_PG3_PORT  (5432, 5433, 5434)
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

local urls = {}
for url in env("SY_PATRONI_URLS",
    "http://127.0.0.1:8008,http://127.0.0.1:8009,http://127.0.0.1:8010"):gmatch("[^,%s]+") do
  urls[#urls + 1] = url
end

return {
  clusters = {
    main = {
      nodes = {
        { name = "pg1", conninfo = conninfo("SY_PG1_PORT", "5432") },
        { name = "pg2", conninfo = conninfo("SY_PG2_PORT", "5433") },
        { name = "pg3", conninfo = conninfo("SY_PG3_PORT", "5434") },
      },
      failover = { mode = "patroni", patroni = urls, write_wait = 10 },
    },
  },
  health = { interval = 0.25, timeout = 1, fall = 3, rise = 1 },
  pool = { min = 1, max = 20 },
}

-- read_write_split.lua behind the proxy: `switchyard -c examples/configs/proxy.lua`
-- listens on 127.0.0.1:6432 (and the Unix socket in /tmp), pools backends in
-- transaction mode and routes every transaction through the policy.
--
--   psql "host=127.0.0.1 port=6432 dbname=postgres user=postgres"
--   psql "host=127.0.0.1 port=6432 dbname=switchyard user=postgres" -c "SHOW POOLS"
--
-- Ports come from the environment as in read_write_split.lua.  For logins
-- with passwords set auth = { type = "scram-sha-256", file = "userlist.txt" }
-- (PgBouncer's format) or auth.query; for TLS, tls = { mode = "require",
-- cert = "server.crt", key = "server.key" }.

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
  policy = "read_write_split",
  pool = { min = 2, max = 20 },
  proxy = {
    listen = { env("SY_PROXY_LISTEN", "127.0.0.1:6432") },
    unix_socket_dir = "/tmp",
    pool_mode = "transaction",
    auth = { type = "trust" },          -- trust is for a laptop; see above
    timeouts = { client_idle = 0, wait_backend = 5, idle_in_transaction = 60 },
    admin = { users = { "postgres" } }, -- who may SHOW, RELOAD, DRAIN, ENABLE
  },
}

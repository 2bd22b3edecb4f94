-- The proxy section of a config (`proxy = { ... }`): what `switchyard -c`
-- listens on, how clients log in, pooling, timeouts and the admin console.
-- config.lua calls check() with the raw section; absent, cfg.proxy is nil
-- (embedded use), present (even {}), every key is filled with its default.
--
--     proxy = {                   -- optional: the PostgreSQL server front end
--                                 --   (`switchyard -c`).  Absent: cfg.proxy is nil
--                                 --   (embedded use); present (even {}): every
--                                 --   key below filled with its default
--       listen = { "127.0.0.1:6432", "[::1]:6432" },
--                                 -- TCP listeners, "host:port" (IPv4, host name,
--                                 --   or IPv6 in brackets; port 1..65535); may
--                                 --   be {} when unix_socket_dir is set
--       unix_socket_dir = nil,    -- existing directory for <dir>/.s.PGSQL.<port>
--                                 --   (port of the first listen address, else
--                                 --   6432), relative to the config file's directory
--       unix_socket_mode = "0777",-- permissions, 3 or 4 octal digits as a string
--       max_clients = 1000,       -- client connections at most (integer >= 1)
--       client_buffer = 65536,    -- bytes buffered per client (integer >= 8192)
--       max_message = 16777216,   -- bytes, largest client message (integer >= 65536)
--       pool_mode = "transaction",-- "transaction" | "session"
--       tls = {                   -- TLS to clients; paths are relative to the
--                                 --   config file's directory and must exist
--         mode = "disable",       -- "disable" | "prefer" | "require"
--         cert = nil,             -- PEM certificate, required unless "disable"
--         key = nil,              -- PEM private key, required unless "disable"
--         ca = nil,               -- PEM CA bundle (optional)
--       },
--       auth = {
--         type = "trust",         -- "trust" | "md5" | "scram-sha-256"
--         file = nil,             -- PgBouncer userlist.txt, relative to the config
--                                 --   file's directory, must exist; md5 and
--                                 --   scram-sha-256 need it unless query is set
--         query = nil,            -- SQL (auth_query) returning a user's secret
--         query_cluster = nil,    -- cluster the query runs on (must exist; only
--                                 --   with query; default_cluster when omitted)
--       },
--       timeouts = {              -- s, each >= 0, 0 = none
--         client_idle = 0,        -- an idle client is disconnected after this
--         wait_backend = 5,       -- a client waits this long for a backend
--         connect = 5,            -- a backend connect may take this long
--         idle_in_transaction = 0,-- idle inside a transaction, then disconnected
--         client_login = 60,      -- startup and authentication may take this long
--       },
--       admin = {                 -- the admin console (SHOW NODES, RELOAD, ...)
--         database = "switchyard",-- the virtual database that reaches it
--         users = {},             -- array of user names allowed to use it (empty:
--                                 --   nobody; the console can drain every node)
--       },
--       prepared_statements = {
--         max_per_backend = 256,  -- client statements cached per backend
--                                 --   connection (integer >= 0; 0 disables renaming)
--       },
--       shutdown = {
--         drain_timeout = 30,     -- s open transactions get after SIGTERM (> 0)
--       },
--       switchyard_variables = true, -- intercept SET switchyard.<name> = ... (never
--                                 --   sent to PostgreSQL); the policy sees them
--                                 --   as session variables
--     },
--
-- Normalised:
--   cfg.proxy            nil without a proxy section; otherwise every key above
--                        filled, tls.cert/key/ca and auth.file absolute, auth.query_cluster
--                        set whenever auth.query is, unix_socket_dir absolute, plus
--                        proxy.listeners  array of { address, host (no brackets), port
--                                         (number), ipv6 (boolean) }, in listen order
--                        proxy.unix_socket_path  <dir>/.s.PGSQL.<port> when
--                                         unix_socket_dir is set

local resolve = require("switchyard.resolve")
local check_lib = require("switchyard.config_check")

local child, index, add, expected = check_lib.child, check_lib.index, check_lib.add,
  check_lib.expected
local check_keys, array_length = check_lib.check_keys, check_lib.array_length
local check_string, check_boolean = check_lib.check_string, check_lib.check_boolean
local check_number_fields, merge = check_lib.check_number_fields, check_lib.merge
local check_settings, check_choice = check_lib.check_settings, check_lib.check_choice

local proxy_section = {}

local PROXY_KEYS = {
  "listen", "unix_socket_dir", "unix_socket_mode", "max_clients", "client_buffer",
  "max_message", "pool_mode", "tls", "auth", "timeouts", "admin", "prepared_statements",
  "shutdown", "switchyard_variables",
}
local PROXY_LIMIT_FIELDS = {
  { key = "max_clients", int = true, min = 1 },
  { key = "client_buffer", int = true, min = 8192 },
  { key = "max_message", int = true, min = 65536 },
}
local PROXY_TIMEOUT_FIELDS = {
  { key = "client_idle", min = 0 },
  { key = "wait_backend", min = 0 },
  { key = "connect", min = 0 },
  { key = "idle_in_transaction", min = 0 },
  { key = "client_login", min = 0 },
}
local PREPARED_FIELDS = { { key = "max_per_backend", int = true, min = 0 } }
local SHUTDOWN_FIELDS = { { key = "drain_timeout", min = 0, positive = true } }
local TLS_KEYS = { "mode", "cert", "key", "ca" }
local AUTH_KEYS = { "type", "file", "query", "query_cluster" }
local ADMIN_KEYS = { "database", "users" }
local POOL_MODES = { "transaction", "session" }
local TLS_MODES = { "disable", "prefer", "require" }
local AUTH_TYPES = { "trust", "md5", "scram-sha-256" }

local PROXY_DEFAULTS = {
  listen = { "127.0.0.1:6432", "[::1]:6432" },
  unix_socket_mode = "0777",
  max_clients = 1000, client_buffer = 65536, max_message = 16777216,
  pool_mode = "transaction",
  tls_mode = "disable",
  auth_type = "trust",
  timeouts = { client_idle = 0, wait_backend = 5, connect = 5, idle_in_transaction = 0,
               client_login = 60 },
  admin_database = "switchyard",
  prepared_statements = { max_per_backend = 256 },
  shutdown = { drain_timeout = 30 },
  switchyard_variables = true,
}

-- The port a Unix socket is named after when there is no TCP listener.
local DEFAULT_PROXY_PORT = 6432
-- sizeof(sun_path) - 1 on Linux.
local MAX_SOCKET_PATH = 107

-- A copy of the proxy section as it is when given as proxy = {}.
function proxy_section.defaults()
  local d = PROXY_DEFAULTS
  local listen = {}
  for i, l in ipairs(d.listen) do listen[i] = l end
  return {
    listen = listen, unix_socket_dir = nil, unix_socket_mode = d.unix_socket_mode,
    max_clients = d.max_clients, client_buffer = d.client_buffer, max_message = d.max_message,
    pool_mode = d.pool_mode,
    tls = { mode = d.tls_mode },
    auth = { type = d.auth_type },
    timeouts = merge(d.timeouts, {}),
    admin = { database = d.admin_database, users = {} },
    prepared_statements = merge(d.prepared_statements, {}),
    shutdown = merge(d.shutdown, {}),
    switchyard_variables = d.switchyard_variables,
  }
end

local function is_dir(path)
  -- Opening "<dir>/." succeeds only when dir is a directory (ENOTDIR otherwise).
  local f = io.open(path .. "/.", "r")
  if not f then return false end
  f:close()
  return true
end

-- A table section of the proxy: nil is fine, anything else must be a table
-- with only the allowed keys.  Returns the table or nil.
local function check_section(errs, path, raw, keys)
  if raw == nil then return nil end
  if type(raw) ~= "table" then
    expected(errs, path, "a table", raw)
    return nil
  end
  check_keys(errs, path, raw, keys)
  return raw
end

-- A file path resolved against config_dir that must exist; returns the
-- absolute path or nil.
local function check_file(errs, path, v, config_dir, what)
  if check_string(errs, path, v, what) == nil then return nil end
  local abs = resolve.absolute(v, config_dir)
  if not resolve.file_exists(abs) then
    add(errs, path, ("file %s not found"):format(abs))
    return nil
  end
  return abs
end

local LISTEN_FORMAT = '"host:port" (IPv6 in brackets: "[::1]:6432")'

-- "host:port" or "[v6]:port" -> { address, host, port, ipv6 } or nil.
local function check_listen_address(errs, path, v)
  if type(v) ~= "string" then
    expected(errs, path, LISTEN_FORMAT, v)
    return nil
  end
  local host, port = v:match("^%[([%x:%.]+)%]:(%d+)$")
  local ipv6 = host ~= nil
  if ipv6 and not host:find(":", 1, true) then host = nil end
  if not host then
    ipv6 = false
    host, port = v:match("^([%w_][%w_%.%-]*):(%d+)$")
  end
  if not host then
    if v:match("^[%x:]*:[%x:]*:%d+$") then
      add(errs, path, ('IPv6 addresses go in brackets, as in "[::1]:6432", got string %q'):format(v))
    else
      expected(errs, path, LISTEN_FORMAT, v)
    end
    return nil
  end
  local n = tonumber(port)
  if #port > 5 or n < 1 or n > 65535 then
    expected(errs, path, '"host:port" with a port in 1..65535', v)
    return nil
  end
  return { address = v, host = host, port = n, ipv6 = ipv6 }
end

local function check_listen(errs, path, raw)
  if raw == nil then
    local listen, listeners = {}, {}
    for i, l in ipairs(PROXY_DEFAULTS.listen) do
      listen[i] = l
      listeners[i] = check_listen_address(errs, index(path, i), l)
    end
    return listen, listeners
  end
  if type(raw) ~= "table" or array_length(raw) == nil then
    expected(errs, path, 'an array of "host:port" strings', raw)
    return {}, {}
  end
  local listen, listeners, seen = {}, {}, {}
  for i = 1, #raw do
    local l = check_listen_address(errs, index(path, i), raw[i])
    if l then
      local key = l.host:lower() .. "\0" .. l.port
      if seen[key] then
        add(errs, index(path, i), ("duplicate listen address %q (also listen[%d])")
          :format(l.address, seen[key]))
      else
        seen[key] = i
        listen[#listen + 1] = l.address
        listeners[#listeners + 1] = l
      end
    end
  end
  return listen, listeners
end

local function check_tls(errs, path, raw, config_dir)
  local tls = { mode = PROXY_DEFAULTS.tls_mode }
  raw = check_section(errs, path, raw, TLS_KEYS)
  if raw == nil then return tls end
  if raw.mode ~= nil then
    tls.mode = check_choice(errs, child(path, "mode"), raw.mode, TLS_MODES)
  end
  for _, k in ipairs({ "cert", "key" }) do
    local kpath = child(path, k)
    if raw[k] ~= nil then
      tls[k] = check_file(errs, kpath, raw[k], config_dir, "a path to a PEM file")
    elseif tls.mode and tls.mode ~= "disable" then
      add(errs, kpath, ('required when mode is %q (a path to a PEM file)'):format(tls.mode))
    end
  end
  if raw.ca ~= nil then
    tls.ca = check_file(errs, child(path, "ca"), raw.ca, config_dir, "a path to a PEM file")
  end
  return tls
end

local function check_auth(errs, path, raw, config_dir, cfg, raw_clusters)
  local auth = { type = PROXY_DEFAULTS.auth_type }
  raw = check_section(errs, path, raw, AUTH_KEYS)
  if raw == nil then return auth end
  if raw.type ~= nil then
    auth.type = check_choice(errs, child(path, "type"), raw.type, AUTH_TYPES)
  end
  if raw.file ~= nil then
    auth.file = check_file(errs, child(path, "file"), raw.file, config_dir,
      "a path to a userlist.txt file")
  elseif (auth.type == "md5" or auth.type == "scram-sha-256") and raw.query == nil then
    add(errs, child(path, "file"), ('required when type is %q (a path to a userlist.txt file, '
      .. "unless auth.query is set)"):format(auth.type))
  end
  if raw.query ~= nil then
    auth.query = check_string(errs, child(path, "query"), raw.query, "a non-empty SQL string")
  end
  local qc, qpath = raw.query_cluster, child(path, "query_cluster")
  if qc == nil then
    -- The auth query runs on the default cluster unless told otherwise.
    if auth.query then auth.query_cluster = cfg.default_cluster end
  elseif raw.query == nil then
    add(errs, qpath, "only used with auth.query, which is not set")
  elseif type(qc) ~= "string" then
    expected(errs, qpath, "a cluster name", qc)
  elseif cfg.cluster_by_name[qc] then
    auth.query_cluster = qc
  elseif type(raw_clusters) ~= "table" or raw_clusters[qc] == nil then
    -- A cluster that failed validation is still a name the user wrote.
    local names = {}
    for i, c in ipairs(cfg.clusters) do names[i] = c.name end
    add(errs, qpath, ("no cluster named %q (clusters: %s)"):format(qc, table.concat(names, ", ")))
  end
  return auth
end

local function check_admin(errs, path, raw)
  local admin = { database = PROXY_DEFAULTS.admin_database, users = {} }
  raw = check_section(errs, path, raw, ADMIN_KEYS)
  if raw == nil then return admin end
  if raw.database ~= nil then
    admin.database = check_string(errs, child(path, "database"), raw.database,
      "a non-empty database name")
  end
  local users, upath = raw.users, child(path, "users")
  if users ~= nil then
    if type(users) ~= "table" or array_length(users) == nil then
      expected(errs, upath, "an array of user names", users)
    else
      for i = 1, #users do
        local u = check_string(errs, index(upath, i), users[i], "a non-empty user name")
        if u then admin.users[#admin.users + 1] = u end
      end
    end
  end
  return admin
end

-- The proxy section, or nil when the config has none (embedded use).
function proxy_section.check(errs, raw, cfg, raw_clusters)
  if raw == nil then return nil end
  if type(raw) ~= "table" then
    expected(errs, "proxy", "a table", raw)
    return nil
  end
  check_keys(errs, "proxy", raw, PROXY_KEYS)
  local config_dir = cfg.config_dir
  local proxy = merge(proxy_section.defaults(),
    check_number_fields(errs, "proxy", raw, PROXY_LIMIT_FIELDS, true))

  proxy.listen, proxy.listeners = check_listen(errs, "proxy.listen", raw.listen)

  if raw.unix_socket_dir ~= nil then
    local dir = check_string(errs, "proxy.unix_socket_dir", raw.unix_socket_dir,
      "a directory path")
    if dir then
      dir = resolve.absolute(dir, config_dir)
      if not is_dir(dir) then
        add(errs, "proxy.unix_socket_dir", ("directory %s not found"):format(dir))
      else
        local port = proxy.listeners[1] and proxy.listeners[1].port or DEFAULT_PROXY_PORT
        local socket = ("%s/.s.PGSQL.%d"):format(dir == "/" and "" or dir, port)
        if #socket > MAX_SOCKET_PATH then
          add(errs, "proxy.unix_socket_dir", ("socket path %s is longer than %d bytes")
            :format(socket, MAX_SOCKET_PATH))
        else
          proxy.unix_socket_dir, proxy.unix_socket_path = dir, socket
        end
      end
    end
  end
  if type(raw.listen) == "table" and next(raw.listen) == nil and raw.unix_socket_dir == nil then
    add(errs, "proxy.listen", "expected at least one address when there is no unix_socket_dir")
  end
  if raw.unix_socket_mode ~= nil then
    local m = raw.unix_socket_mode
    if type(m) ~= "string" or not (m:match("^[0-7][0-7][0-7]$") or m:match("^0[0-7][0-7][0-7]$")) then
      expected(errs, "proxy.unix_socket_mode", 'a string of octal digits such as "0777"', m)
    else
      proxy.unix_socket_mode = m
    end
  end

  if raw.pool_mode ~= nil then
    proxy.pool_mode = check_choice(errs, "proxy.pool_mode", raw.pool_mode, POOL_MODES)
  end
  proxy.tls = check_tls(errs, "proxy.tls", raw.tls, config_dir)
  proxy.auth = check_auth(errs, "proxy.auth", raw.auth, config_dir, cfg, raw_clusters)
  proxy.timeouts = check_settings(errs, "proxy.timeouts", raw.timeouts, PROXY_TIMEOUT_FIELDS,
    PROXY_DEFAULTS.timeouts)
  proxy.admin = check_admin(errs, "proxy.admin", raw.admin)
  proxy.prepared_statements = check_settings(errs, "proxy.prepared_statements",
    raw.prepared_statements, PREPARED_FIELDS, PROXY_DEFAULTS.prepared_statements)
  proxy.shutdown = check_settings(errs, "proxy.shutdown", raw.shutdown, SHUTDOWN_FIELDS,
    PROXY_DEFAULTS.shutdown)
  if raw.switchyard_variables ~= nil then
    local v = check_boolean(errs, "proxy.switchyard_variables", raw.switchyard_variables)
    if v ~= nil then proxy.switchyard_variables = v end
  end
  return proxy
end

return proxy_section

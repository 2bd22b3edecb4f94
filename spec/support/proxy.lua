-- The proxy on a test bed: starts `switchyard -c` with a config written for
-- the bed, waits until it answers, and runs real clients against it.
local cluster = require("support.cluster")
local E = require("support.engine")

local quote, read_file = cluster.quote, cluster.read_file
local M = {}

--- Starts the proxy.  opts: proxy (text inside proxy = { ... } after
--- listen), extra (top-level config text; default a small pool),
--- log_level, cluster_extra (text in each cluster's table).  Returns a handle:
---   port, log, config, dir, pid
---   conninfo(extra)        libpq conninfo through the proxy
---   psql(sql, opts)        runs psql through the proxy (see Bed:try_psql)
---   admin(sql)             psql on the admin console
---   env()                  "PGHOST=... PGPORT=... " to prefix a client's command
---   stop(signal), log_text()
function M.start(bed, opts)
  opts = opts or {}
  local port = opts.port or cluster.free_port()
  local dir = E.tmpdir()
  local listen = opts.listen or ("%q"):format("127.0.0.1:" .. port)
  -- The admin console is closed unless users are named; the specs log in
  -- as postgres (a spec's own admin = {...} comes later and wins).
  local section = ("proxy = { listen = { %s }, admin = { users = { \"postgres\" } }%s },"):format(listen,
    opts.proxy and (", " .. opts.proxy) or "")
  local config = E.write_config(bed, {
    path = dir .. "/proxy_config.lua",
    log_level = opts.log_level or "info",
    default_cluster = opts.default_cluster,
    cluster_extra = opts.cluster_extra,
    auto_roles = opts.auto_roles,
    extra = (opts.extra or "pool = { min = 1, max = 8 },") .. "\n" .. section,
  })
  local log = dir .. "/proxy.log"
  local bin = cluster.build_dir() .. "/switchyard"
  local proc = bed:spawn(quote(bin) .. " -c " .. quote(config), log)
  local px = { port = port, log = log, config = config, dir = dir, pid = proc.pid, stop = proc.stop }
  function px.log_text() return read_file(log) or "" end
  function px.conninfo(extra)
    return ("host=127.0.0.1 port=%d dbname=postgres user=postgres sslmode=disable connect_timeout=5%s")
      :format(port, extra and (" " .. extra) or "")
  end
  function px.env()
    return ("PGHOST=127.0.0.1 PGPORT=%d PGUSER=postgres PGDATABASE=postgres PGSSLMODE=disable ")
      :format(port)
  end
  local target = { conninfo = px.conninfo() }
  function px.psql(sql, o) return bed:try_psql({ conninfo = (o and o.conninfo) or target.conninfo }, sql, o) end
  function px.admin(sql)
    return bed:try_psql({ conninfo = px.conninfo():gsub("dbname=postgres", "dbname=switchyard") }, sql)
  end
  if opts.no_wait then return px end
  cluster.wait_for(function()
    if not cluster.pid_alive(proc.pid) then
      error("switchyard -c exited:\n" .. px.log_text(), 0)
    end
    local ok = px.admin("SHOW HELP")
    return ok
  end, 15, "the proxy to answer")
  return px
end

return M

-- `make demo`, part two: the same throwaway cluster shape (a primary and two
-- streaming replicas) behind `switchyard -c`, the proxy, driven by psql.
-- Each statement asks PostgreSQL which server ran it (inet_server_port(),
-- pg_is_in_recovery()), so the report is the servers' own word.  It exits 1
-- if anything ran where read_write_split does not allow, and removes the
-- servers and the proxy on the way out.
--
--   luajit examples/demo_proxy.lua   (SWITCHYARD_BUILD names the build dir)

local script_dir = (arg and arg[0] or ""):match("^(.*)/[^/]*$") or "."
package.path = table.concat({ script_dir .. "/../spec/?.lua", package.path }, ";")

local cluster = require("support.cluster")
local proxy = require("support.proxy")

local out = io.stdout
local function say(fmt, ...)
  out:write(fmt:format(...), "\n")
  out:flush()
end

local state = { problems = {} }

local function run()
  local t0 = cluster.now()
  say("starting a primary and two streaming replicas ...")
  local bed = cluster.start({ clusters = { { name = "main", replicas = 2 } } })
  state.bed = bed
  local c = bed.clusters.main
  bed:psql(c.primary, "CREATE TABLE demo_items (id serial PRIMARY KEY, v text)")
  bed:wait_replicas_streaming("main")
  local names = { [tostring(c.primary.port)] = "main.primary" }
  for i, r in ipairs(c.replicas) do names[tostring(r.port)] = "main.replica" .. i end

  local px = proxy.start(bed, { log_level = "warn" })
  state.px = px
  say("switchyard -c %s listening on 127.0.0.1:%d", px.config, px.port)
  say("")
  say("psql \"%s\" runs:", px.conninfo())

  -- One psql session.  Statements that return rows report the server
  -- that ran them; BEGIN, COMMIT and SET print nothing.
  local WHERE = "inet_server_port(), pg_is_in_recovery()"
  local steps = {
    { "SELECT count(*), " .. WHERE .. " FROM demo_items", "replica" },
    { "SELECT count(*), " .. WHERE .. " FROM demo_items", "replica" },
    { "INSERT INTO demo_items (v) VALUES ('a') RETURNING id, " .. WHERE, "primary" },
    { "BEGIN", nil, "a transaction: one primary connection until COMMIT" },
    { "SELECT count(*), " .. WHERE .. " FROM demo_items", "primary" },
    { "UPDATE demo_items SET v = 'b' WHERE id = 1 RETURNING id, " .. WHERE, "primary" },
    { "COMMIT", nil, "the backend goes back to the pool" },
    { "/* sy: route=primary */ SELECT count(*), " .. WHERE .. " FROM demo_items", "primary" },
    { "SET TimeZone = 'Asia/Tokyo'", nil, "kept for the session, set on every backend it uses" },
    { "SELECT current_setting('TimeZone'), " .. WHERE, "replica" },
  }
  local sql = {}
  for _, s in ipairs(steps) do sql[#sql + 1] = s[1] .. ";" end
  local ok, text, err = px.psql(table.concat(sql, "\n"))
  if not ok then error({ message = "psql through the proxy failed: " .. text .. err }) end
  local lines = {}
  for line in text:gmatch("[^\n]+") do lines[#lines + 1] = line end
  local n = 0
  for _, s in ipairs(steps) do
    if s[2] then
      n = n + 1
      local value, port, rec = (lines[n] or ""):match("^(.-)|(%d+)|([tf])$")
      local where = port and (names[port] or ("port " .. port)) or "?"
      say("  %-72s -> %-13s %s", s[1]:gsub(", inet_server_port%(%), pg_is_in_recovery%(%)", ""), where,
        value and ("= " .. value) or "")
      if not port or (s[2] == "replica") ~= (rec == "t") then
        state.problems[#state.problems + 1] = ("%q ran on %s"):format(s[1], where)
      end
    else
      say("  %-72s    (%s)", s[1], s[3])
    end
  end

  say("")
  say("the admin console (psql -d switchyard ...):")
  local _, nodes = px.admin("SHOW POOLS")
  say("  SHOW POOLS  (node|mode|total|idle|busy|connecting|waiting|exhausted|max)")
  for line in nodes:gmatch("[^\n]+") do say("    %s", line) end
  local _, stats = px.admin("SHOW STATS")
  for line in stats:gmatch("[^\n]+") do
    if line:match("^transactions|") or line:match("^queries|") or line:match("^route_avg_us|") then
      say("  SHOW STATS  %s", line)
    end
  end
  if #state.problems > 0 then
    error({ message = "the routing was not what read_write_split promises:\n  "
      .. table.concat(state.problems, "\n  ") })
  end
  say("")
  say("reads went to replicas, writes and the transaction to the primary (%.1f s)", cluster.now() - t0)
end

local ok, err = xpcall(run, function(e)
  if type(e) == "table" and e.message then return e.message end
  return debug.traceback(tostring(e), 2)
end)
if state.px then pcall(state.px.stop) end
if state.bed then pcall(state.bed.teardown, state.bed) end
if not ok then
  io.stderr:write("\nproxy demo failed: ", tostring(err), "\n")
  os.exit(1)
end
say("cleaned up: proxy and servers stopped, temporary directory removed")
os.exit(0)

-- `make demo`: switchyard routing a mixed workload over a throwaway local
-- cluster (a primary and two streaming replicas), in about ten seconds.
--
--   luajit examples/demo.lua      (SWITCHYARD_BUILD names the build dir,
--                                  default "build"; run `make` first)
--
-- It starts the servers with the test bed (spec/support/cluster.lua), embeds
-- the engine through LuaJIT's FFI (spec/support/engine.lua) with the default
-- policy, read_write_split with round robin, and runs reads, writes,
-- transactions and a hinted read.  Every query also asks PostgreSQL which
-- server answered (inet_server_port()), so the report below is what the
-- servers say, not only what the engine believes.  It exits 1 if any query
-- landed somewhere the policy does not allow or the two disagree.  The
-- servers and their directory are removed on the way out, on error too.

local script_dir = (arg and arg[0] or ""):match("^(.*)/[^/]*$") or "."
package.path = table.concat({
  script_dir .. "/../spec/?.lua", script_dir .. "/../lua/?.lua",
  script_dir .. "/../policies/?.lua", package.path,
}, ";")

-- The engine calls back into Lua from inside ev_run; FFI callbacks must not
-- be entered from compiled traces, and a demo has no use for the JIT.
jit.off()

local ffi = require("ffi")
local cluster = require("support.cluster")

local WORKLOAD = { reads = 300, writes = 50, transactions = 10, concurrency = 16 }
local TABLE_SQL = "CREATE TABLE demo_orders (id serial PRIMARY KEY, customer int NOT NULL, "
  .. "total numeric NOT NULL, created_at timestamptz NOT NULL DEFAULT now())"

local root = cluster.repo_root()
local lib_path = cluster.build_dir() .. "/libswitchyard.so"

-- The FFI loader (spec/support/ffi.lua) finds the header under
-- SWITCHYARD_ROOT and the library at SWITCHYARD_LIB; point both at this
-- checkout so the demo runs from any directory.
pcall(ffi.cdef, "int setenv(const char *name, const char *value, int overwrite);")
ffi.C.setenv("SWITCHYARD_ROOT", root, 0)
ffi.C.setenv("SWITCHYARD_LIB", lib_path, 0)

local out = io.stdout
local function say(fmt, ...)
  out:write(fmt:format(...), "\n")
  out:flush()
end

-- A failure the demo explains itself: a table, so the handler below can
-- tell it from a Lua error that deserves a traceback.
local function die(fmt, ...)
  error({ message = fmt:format(...) }, 0)
end

local function count_keys(t)
  local n = 0
  for _ in pairs(t) do n = n + 1 end
  return n
end

-- Mutable demo state; cleanup() reads it whatever happened.
local demo = { problems = {} }

-- Records where one reply ran.  The first column of its first row must be
-- inet_server_port(); a disagreement with reply.node is a problem.
local function record(kind, reply, allowed)
  if not reply.ok then
    die("a %s failed: %s %s", kind.name, tostring(reply.sqlstate), tostring(reply.message))
  end
  local row = reply.results[#reply.results].rows[1]
  local answered = demo.by_port[row and row[1]]
  if answered == nil then die("a %s returned no server port", kind.name) end
  if answered ~= reply.node then
    demo.problems[#demo.problems + 1] = ("a %s: the engine reported %s but %s answered")
      :format(kind.name, tostring(reply.node), answered)
  end
  if not allowed[answered] then
    demo.problems[#demo.problems + 1] = ("a %s ran on %s"):format(kind.name, answered)
  end
  kind.total = kind.total + 1
  kind.nodes[answered] = (kind.nodes[answered] or 0) + 1
  return row
end

local function new_kind(name, note)
  return { name = name, note = note, total = 0, nodes = {} }
end

local function run()
  local t0 = cluster.now()
  if not io.open(lib_path) then
    die("%s is missing: run `make` first (or set SWITCHYARD_BUILD)", lib_path)
  end
  local E = require("support.engine")

  say("switchyard demo: one primary, two streaming replicas, policy read_write_split (round robin)")
  say("")
  demo.bed = cluster.start({ clusters = { { name = "main", replicas = 2 } } })
  local c = demo.bed.clusters.main
  demo.by_port = {}
  demo.port_of = {}
  for _, node in ipairs({ c.primary, c.replicas[1], c.replicas[2] }) do
    local name = "main." .. node.name
    demo.by_port[tostring(node.port)] = name
    demo.port_of[name] = node.port
  end
  say("  started main.primary (port %d), main.replica1 (port %d), main.replica2 (port %d) in %.1f s",
    c.primary.port, c.replicas[1].port, c.replicas[2].port, cluster.now() - t0)

  local config = E.write_config(demo.bed, {
    path = demo.bed.dir .. "/demo_config.lua",
    extra = [[
  policy = "read_write_split",
  policy_options = { balancer = "round_robin" },
  pool = { min = 2, max = 8 },
  watch = false,]],
  })
  local eng, err = E.new(config, { home = root, log_level = 2 })
  if not eng then die("the engine refused the config: %s", err) end
  demo.eng = eng

  local primary_only = { ["main.primary"] = true }
  local replicas_only = { ["main.replica1"] = true, ["main.replica2"] = true }

  local ddl = eng:query(TABLE_SQL)
  if not ddl.ok then die("CREATE TABLE failed: %s", tostring(ddl.message)) end
  if ddl.node ~= "main.primary" then
    demo.problems[#demo.problems + 1] = "CREATE TABLE ran on " .. tostring(ddl.node)
  end
  -- Reads go to the replicas: let them replay the new table first.
  demo.bed:wait_replayed("main")
  say("  created table demo_orders through the engine on %s; replicas caught up", tostring(ddl.node))

  -- Reads and writes interleaved (every seventh query writes), 16 in flight.
  -- Parameters are passed as strings the params table keeps alive until
  -- sy_query() has copied them.
  local read = new_kind("read")
  local write = new_kind("write")
  local n = WORKLOAD.reads + WORKLOAD.writes
  local step = math.floor(n / WORKLOAD.writes)
  local function is_write(i) return i % step == 0 and i / step <= WORKLOAD.writes end
  local replies = eng:query_many(n, WORKLOAD.concurrency, function(i)
    if is_write(i) then
      return "INSERT INTO demo_orders (customer, total) VALUES ($1, $2) RETURNING inet_server_port()",
        { tostring(i % 10), ("%d.%02d"):format(10 + i % 90, i % 100) }
    end
    return "SELECT inet_server_port(), count(*) FROM demo_orders WHERE customer = $1", { tostring(i % 10) }
  end)
  for i, r in ipairs(replies) do
    if is_write(i) then record(write, r, primary_only) else record(read, r, replicas_only) end
  end

  -- Transactions: each on its own session, every statement on one
  -- connection of the primary (the backend pid proves it).
  local tx = new_kind("transaction")
  for t = 1, WORKLOAD.transactions do
    local s = eng:session("demo", "postgres", "switchyard-demo")
    local function must(sql, params)
      local r = eng:query(sql, params, s)
      if not r.ok then die("%s failed in a transaction: %s", sql, tostring(r.message)) end
      return r
    end
    must("BEGIN")
    local pids = {}
    local row = record(tx, must("INSERT INTO demo_orders (customer, total) VALUES ($1, 1) "
      .. "RETURNING inet_server_port(), pg_backend_pid()", { tostring(t) }), primary_only)
    pids[row[2]] = true
    row = record(tx, must("UPDATE demo_orders SET total = total + 1 "
      .. "WHERE id = currval('demo_orders_id_seq') RETURNING inet_server_port(), pg_backend_pid()"),
      primary_only)
    pids[row[2]] = true
    row = record(tx, must("SELECT inet_server_port(), pg_backend_pid(), sum(total) "
      .. "FROM demo_orders WHERE customer = $1", { tostring(t) }), primary_only)
    pids[row[2]] = true
    must("COMMIT")
    E.free_session(s)
    if count_keys(pids) ~= 1 then
      demo.problems[#demo.problems + 1] = ("transaction %d used %d connections"):format(t, count_keys(pids))
    end
  end

  -- A read that must see every write at once goes to the primary by hint.
  local hinted = new_kind("hinted read")
  local expected_rows = WORKLOAD.writes + WORKLOAD.transactions
  local row = record(hinted, eng:query("/* sy: route=primary */ SELECT inet_server_port(), "
    .. "count(*) FROM demo_orders"), primary_only)
  hinted.note = ("/* sy: route=primary */ saw all %s of %d rows"):format(row[2], expected_rows)
  if tonumber(row[2]) ~= expected_rows then
    demo.problems[#demo.problems + 1] = ("the hinted read saw %s rows, not %d"):format(row[2], expected_rows)
  end
  tx.note = ("%d x BEGIN; INSERT; UPDATE; SELECT; COMMIT, each on one connection")
    :format(WORKLOAD.transactions)
  if read.nodes["main.replica1"] and read.nodes["main.replica2"] then
    read.note = "round robin"
  end

  say("")
  say("where each kind of query ran (ports as PostgreSQL reported them):")
  for _, kind in ipairs({ read, write, tx, hinted }) do
    local parts = {}
    for _, name in ipairs({ "main.primary", "main.replica1", "main.replica2" }) do
      local k = kind.nodes[name]
      if k then
        local share = count_keys(kind.nodes) > 1 and (" x" .. k) or ""
        parts[#parts + 1] = ("%s (port %d)%s"):format(name, demo.port_of[name], share)
      end
    end
    say("  %-12s %4d -> %s%s", kind.name, kind.total, table.concat(parts, ", "),
      kind.note and ("   " .. kind.note) or "")
  end

  say("")
  say("distribution (engine counters, sy_node_stats_get):")
  local stats = eng:node_stats()
  local total = 0
  for _, st in pairs(stats) do total = total + st.queries end
  say("  %-14s %-8s %8s %7s %12s %10s", "node", "role", "queries", "share", "avg latency", "p95")
  for _, name in ipairs({ "main.primary", "main.replica1", "main.replica2" }) do
    local st = stats[name]
    say("  %-14s %-8s %8d %6.1f%% %9.2f ms %7.2f ms", name, st.role, st.queries,
      total > 0 and 100 * st.queries / total or 0, st.latency_avg_ms, st.p95)
  end
  say("  %-14s %-8s %8d %6.1f%%", "total", "", total, 100)
  local es = eng:engine_stats()
  say("  routing decisions took %.1f us on average in the Lua policy", es.route_avg_us)

  if #demo.problems > 0 then
    die("the routing was not what read_write_split promises:\n  %s", table.concat(demo.problems, "\n  "))
  end
  say("")
  say("every answer came from the node the engine reported; %d queries in %.1f s in all",
    total, cluster.now() - t0)
end

-- Runs whatever happened before: the engine first (it holds connections
-- to the servers), then the servers and their directory.
local function cleanup()
  if demo.eng then pcall(demo.eng.close, demo.eng) end
  if demo.bed then pcall(demo.bed.teardown, demo.bed) end
end

local ok, err = xpcall(run, function(e)
  if type(e) == "table" and e.message then return e.message end
  return debug.traceback(tostring(e), 2)
end)
cleanup()
if not ok then
  io.stderr:write("\ndemo failed: ", tostring(err), "\n")
  os.exit(1)
end
say("cleaned up: servers stopped, temporary directory removed")
os.exit(0)

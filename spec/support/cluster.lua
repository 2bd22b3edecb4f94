-- Real PostgreSQL servers for the specs: primaries and streaming replicas on
-- loopback, in a throwaway directory, started fast and always torn down.
--
--   local cluster = require("support.cluster")
--   local bed = cluster.start{ clusters = { { name = "main", replicas = 2 } } }
--   bed:psql(bed.clusters.main.primary, "SELECT 1")   --> "1"
--   bed:teardown()
--
-- Every bed gets a reaper: a detached shell that watches this process and,
-- once it is gone (crash, kill -9, timeout), stops the bed's servers and
-- removes its directory.  initdb runs once per process; later primaries are
-- copies of that template.  Nothing is shared between processes.
local M = {}

local has_system, system = pcall(require, "system")

require("support.sanitizer")

local DEFAULT_PG_BIN = "/usr/lib/postgresql/15/bin"
local HOST = "127.0.0.1"
local PORT_LOW, PORT_HIGH = 20000, 32000 -- below the kernel's ephemeral range

-- Settings every server of every bed gets.  Durability is traded for speed;
-- the short intervals make replication, reconnects and lag reports quick.
local BASE_SETTINGS = {
  { "listen_addresses", HOST },
  { "fsync", false },
  { "full_page_writes", false },
  { "synchronous_commit", false },
  { "wal_writer_delay", "10ms" },
  { "shared_buffers", "16MB" },
  { "wal_level", "replica" },
  { "max_wal_senders", 20 },
  { "max_replication_slots", 20 },
  { "wal_keep_size", "256MB" },
  { "hot_standby", true },
  { "wal_receiver_status_interval", "1s" },
  { "wal_retrieve_retry_interval", "100ms" },
  { "max_prepared_transactions", 20 },
  { "jit", false },
  -- Segments live under the datadir, so a killed server leaks nothing.
  { "dynamic_shared_memory_type", "mmap" },
  { "logging_collector", false },
  { "log_checkpoints", false },
  { "log_line_prefix", "%m [%p] %q%a " },
}

--- Settings for a cluster whose acknowledged commits must survive losing
--- the primary (failover specs and benchmarks): a commit waits for one
--- standby.  The bed's own default is synchronous_commit = off.
M.SYNCHRONOUS = { synchronous_standby_names = "ANY 1 (*)", synchronous_commit = "on" }

local HBA = [[
# switchyard test bed: trust on loopback only
local   all          all                  trust
local   replication  all                  trust
host    all          all   127.0.0.1/32   trust
host    replication  all   127.0.0.1/32   trust
host    all          all   ::1/128        trust
host    replication  all   ::1/128        trust
]]

---------------------------------------------------------------------------
-- Small helpers: quoting, clocks, files, commands.
---------------------------------------------------------------------------

--- Quotes one word for /bin/sh.
function M.quote(s)
  return "'" .. (tostring(s):gsub("'", "'\\''")) .. "'"
end
local quote = M.quote

local function join_argv(argv)
  local out = {}
  for i, a in ipairs(argv) do out[i] = quote(a) end
  return table.concat(out, " ")
end

--- Wall clock in seconds with sub-second precision.
function M.now()
  if has_system then return system.gettime() end
  local p = io.popen("date +%s.%N")
  local s = p:read("*l")
  p:close()
  return tonumber(s) or os.time()
end

--- Sleeps for `sec` seconds (fractions allowed).
function M.sleep(sec)
  if has_system then
    system.sleep(sec)
  else
    os.execute("sleep " .. string.format("%.3f", sec))
  end
end

local function read_file(path)
  local f = io.open(path, "rb")
  if not f then return nil end
  local s = f:read("*a")
  f:close()
  return s
end
M.read_file = read_file

local function file_exists(path)
  local f = io.open(path, "rb")
  if f then f:close() end
  return f ~= nil
end
M.file_exists = file_exists

local function append_file(path, text)
  local f = assert(io.open(path, "ab"))
  f:write(text)
  f:close()
end

-- Truncates and rewrites an existing file; it keeps its owner (postgres).
local function overwrite_file(path, text)
  local f = assert(io.open(path, "wb"))
  f:write(text)
  f:close()
end

local function tail(path, n)
  local s = read_file(path)
  if not s then return "(no " .. path .. ")" end
  local lines = {}
  for line in (s .. "\n"):gmatch("([^\n]*)\n") do lines[#lines + 1] = line end
  while #lines > 0 and lines[#lines] == "" do lines[#lines] = nil end
  local first = math.max(1, #lines - (n or 20) + 1)
  return table.concat(lines, "\n", first)
end
M.tail = tail

-- os.execute's result as a boolean, on Lua 5.1/LuaJIT (status) and 5.2+.
local function exec_ok(cmd)
  local r = os.execute(cmd)
  return r == true or r == 0
end
M.exec_ok = exec_ok

local function popen_read(cmd)
  local p = assert(io.popen(cmd, "r"))
  local out = p:read("*a")
  p:close()
  return out
end

-- Per-process scratch state (see process_area below).
local proc

local scratch_seq = 0
local function scratch_name(kind)
  scratch_seq = scratch_seq + 1
  return string.format("%s/%s.%d", proc.dir, kind, scratch_seq)
end

local process_area -- forward

--- Runs a shell command; returns exit code, stdout, stderr.
function M.run(cmd)
  process_area()
  local errf = scratch_name("err")
  local out = popen_read("( " .. cmd .. " ) </dev/null 2>" .. quote(errf) .. "; printf '\\n%d' $?")
  local body, code = out:match("^(.*)\n(%d+)$")
  local err = read_file(errf) or ""
  os.remove(errf)
  return tonumber(code) or -1, body or out, err
end

--- Runs a shell command; returns stdout, raises with stderr when it fails.
function M.check(cmd, what)
  local code, out, err = M.run(cmd)
  if code ~= 0 then
    error(string.format("%s failed (exit %d): %s%s", what or cmd, code, err,
      out ~= "" and ("\n" .. out) or ""), 2)
  end
  return out
end

-- Runs several shell commands at once; returns { {code=, out=, err=}, ... }.
local function run_parallel(cmds)
  if #cmds == 0 then return {} end
  process_area()
  local parts, files = {}, {}
  for i, cmd in ipairs(cmds) do
    local base = scratch_name("par")
    files[i] = base
    parts[#parts + 1] = string.format("{ ( %s ) </dev/null >%s 2>%s; echo $? >%s; } &",
      cmd, quote(base .. ".out"), quote(base .. ".err"), quote(base .. ".rc"))
  end
  parts[#parts + 1] = "wait"
  os.execute(table.concat(parts, "\n"))
  local results = {}
  for i, base in ipairs(files) do
    results[i] = {
      code = tonumber(read_file(base .. ".rc") or "") or -1,
      out = read_file(base .. ".out") or "",
      err = read_file(base .. ".err") or "",
    }
    os.remove(base .. ".rc"); os.remove(base .. ".out"); os.remove(base .. ".err")
  end
  return results
end
M.run_parallel = run_parallel

local is_root_cached
local function is_root()
  if is_root_cached == nil then
    is_root_cached = popen_read("id -u"):match("^%s*0%s*$") ~= nil
  end
  return is_root_cached
end
M.is_root = is_root

-- The prefix that makes a command run as the postgres user (empty unless root).
local function pg_user_prefix()
  return is_root() and "runuser -u postgres --" or ""
end

--- A shell command running argv as the postgres user (directly when not root).
function M.as_pg(argv)
  local cmd = join_argv(argv)
  if is_root() then
    return "cd / && runuser -u postgres -- " .. cmd
  end
  return cmd
end
local as_pg = M.as_pg

local pg_bin_dir
--- Full path of a PostgreSQL program (SWITCHYARD_PG_BIN overrides the folder).
function M.pg_bin(name)
  if not pg_bin_dir then
    pg_bin_dir = os.getenv("SWITCHYARD_PG_BIN")
    if not pg_bin_dir or pg_bin_dir == "" then
      if file_exists(DEFAULT_PG_BIN .. "/postgres") then
        pg_bin_dir = DEFAULT_PG_BIN
      else
        pg_bin_dir = popen_read("ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1")
          :gsub("%s+$", "")
        if pg_bin_dir == "" then pg_bin_dir = DEFAULT_PG_BIN end
      end
    end
  end
  return pg_bin_dir .. "/" .. name
end
local pg_bin = M.pg_bin

--- True while the process exists and is not a zombie.
function M.pid_alive(pid)
  local stat = read_file("/proc/" .. tostring(pid) .. "/stat")
  if not stat then return false end
  local state = stat:match(".*%) (%a)")
  return state ~= nil and state ~= "Z" and state ~= "X"
end
local pid_alive = M.pid_alive

--- Polls fn() until it returns a truthy value (returned) or the timeout ends.
function M.wait_for(fn, timeout, what, interval)
  local deadline = M.now() + (timeout or 30)
  while true do
    local v = fn()
    if v then return v end
    if M.now() > deadline then
      error("timed out after " .. tostring(timeout or 30) .. "s waiting for " .. (what or "condition"), 2)
    end
    M.sleep(interval or 0.05)
  end
end

local repo_root_cached
--- Absolute path of the repository (two folders above this file).
function M.repo_root()
  if not repo_root_cached then
    local src = debug.getinfo(1, "S").source:gsub("^@", "")
    local dir = src:match("^(.*)/[^/]*$") or "."
    repo_root_cached = popen_read("cd " .. quote(dir .. "/../..") .. " && pwd"):gsub("%s+$", "")
  end
  return repo_root_cached
end

--- The build folder (SWITCHYARD_BUILD, default "build", relative to the repo).
function M.build_dir()
  local b = os.getenv("SWITCHYARD_BUILD")
  if not b or b == "" then b = "build" end
  if b:sub(1, 1) ~= "/" then b = M.repo_root() .. "/" .. b end
  return b
end

---------------------------------------------------------------------------
-- Process area: scratch files and the initdb template, for this process.
---------------------------------------------------------------------------

-- SWITCHYARD_TMPDIR, else /dev/shm when it is a roomy tmpfs (copies and
-- base backups are twice as fast there), else /tmp.
local tmp_root_cached
local function tmp_root()
  if tmp_root_cached then return tmp_root_cached end
  local t = os.getenv("SWITCHYARD_TMPDIR")
  if not t or t == "" then
    t = "/tmp"
    local avail = popen_read("df -Pk /dev/shm 2>/dev/null | awk 'NR == 2 { print $4 }'"):match("%d+")
    if avail and tonumber(avail) >= 2 * 1024 * 1024 and exec_ok("test -w /dev/shm") then
      t = "/dev/shm"
    end
  end
  tmp_root_cached = t
  return t
end

local function make_temp_dir(prefix)
  local dir = popen_read("mktemp -d " .. quote(tmp_root() .. "/" .. prefix .. ".XXXXXX")):gsub("%s+$", "")
  assert(dir ~= "", "mktemp -d failed in " .. tmp_root())
  if is_root() then
    os.execute("chown postgres:postgres " .. quote(dir) .. " && chmod 755 " .. quote(dir))
  end
  return dir
end

-- Shell function used by the reapers: is $1 a live, non-zombie process?
local ALIVE_FN = [[
alive() {
  s=$(sed 's/.*) //' /proc/"$1"/stat 2>/dev/null) || return 1
  case "$s" in Z*|X*|'') return 1 ;; esac
  return 0
}
]]

-- Starts a detached watcher (its own session, no terminal, no inherited
-- output) that runs `cleanup` once process `parent` is gone or stops quietly
-- when `dir` disappears.  Paths travel in the environment, so no reaper's
-- command line names a bed.
local function spawn_reaper(parent, dir, cleanup, extra_env)
  local script = "trap '' INT HUP QUIT PIPE\n" .. ALIVE_FN .. [[
p=$SY_REAPER_PARENT
d=$SY_REAPER_DIR
while alive "$p" && [ -d "$d" ]; do sleep 0.3; done
[ -d "$d" ] || exit 0
]] .. cleanup .. "\nrm -rf \"$d\"\n"
  local env = { "SY_REAPER_PARENT=" .. quote(parent), "SY_REAPER_DIR=" .. quote(dir) }
  for k, v in pairs(extra_env or {}) do env[#env + 1] = k .. "=" .. quote(v) end
  local launcher = file_exists("/usr/bin/setsid") and "setsid " or "nohup "
  os.execute(table.concat(env, " ") .. " " .. launcher .. "sh -c " .. quote(script)
    .. " sy-reaper >/dev/null 2>&1 </dev/null &")
end

process_area = function()
  if proc then return proc end
  -- The shell io.popen starts is our child, so its $PPID is this process.
  local pid = tonumber((popen_read("echo $PPID")))
  local dir = make_temp_dir("switchyard-proc")
  proc = { dir = dir, pid = pid }
  spawn_reaper(pid, dir, "")
  return proc
end

--- PID of this (Lua) process.
function M.pid()
  return process_area().pid
end

local function setting_line(k, v)
  local val
  if type(v) == "boolean" then
    val = v and "on" or "off"
  elseif type(v) == "number" then
    val = tostring(v)
  else
    val = "'" .. (tostring(v):gsub("'", "''")) .. "'"
  end
  return k .. " = " .. val .. "\n"
end

-- Accepts { {k, v}, ... } or { k = v, ... } (applied in key order).
local function settings_text(settings)
  local lines = {}
  if settings == nil then return "" end
  if #settings > 0 then
    for _, kv in ipairs(settings) do lines[#lines + 1] = setting_line(kv[1], kv[2]) end
  else
    local keys = {}
    for k in pairs(settings) do keys[#keys + 1] = k end
    table.sort(keys)
    for _, k in ipairs(keys) do lines[#lines + 1] = setting_line(k, settings[k]) end
  end
  return table.concat(lines)
end

local function ensure_template()
  local area = process_area()
  if area.template then return area.template end
  local t = area.dir .. "/template"
  M.check(as_pg({ pg_bin("initdb"), "-D", t, "-U", "postgres", "-A", "trust", "-N",
    "-E", "UTF8", "--locale=C", "--wal-segsize=1" }) .. " >/dev/null", "initdb")
  append_file(t .. "/postgresql.conf", "\n# switchyard test bed\n" .. settings_text(BASE_SETTINGS))
  overwrite_file(t .. "/pg_hba.conf", HBA)
  area.template = t
  return t
end

---------------------------------------------------------------------------
-- Ports
---------------------------------------------------------------------------

local reserved_ports = {}
local rng_state

local function next_random()
  if not rng_state then
    local seed = (process_area().pid or 1) * 7919 + math.floor((M.now() % 100000) * 1000)
    rng_state = seed % 2147483646 + 1
  end
  rng_state = (rng_state * 16807) % 2147483647
  return rng_state
end

local function ports_in_use()
  local used = {}
  local seen_any = false
  for _, f in ipairs({ "/proc/net/tcp", "/proc/net/tcp6" }) do
    local fh = io.open(f)
    if fh then
      seen_any = true
      for line in fh:lines() do
        local hex = line:match("^%s*%d+:%s+%x+:(%x+)%s")
        if hex then used[tonumber(hex, 16)] = true end
      end
      fh:close()
    end
  end
  if not seen_any then
    for port in popen_read("ss -Htan 2>/dev/null"):gmatch("%S+:(%d+)%s") do
      used[tonumber(port)] = true
    end
  end
  return used
end

--- A loopback TCP port nobody uses now and this process has not handed out.
function M.free_port()
  local used = ports_in_use()
  for _ = 1, 1000 do
    local port = PORT_LOW + next_random() % (PORT_HIGH - PORT_LOW)
    if not used[port] and not reserved_ports[port] then
      reserved_ports[port] = true
      return port
    end
  end
  error("no free loopback port found")
end

---------------------------------------------------------------------------
-- Beds
---------------------------------------------------------------------------

local Bed = {}
Bed.__index = Bed

local function node_label(node)
  return (node.cluster or "?") .. "/" .. (node.name or "?")
end

local function set_port(node, port)
  node.port = port
  node.conninfo = string.format("host=%s port=%d dbname=postgres user=postgres connect_timeout=5",
    node.host, port)
end

local function pg_ctl_start_cmd(node)
  return as_pg({ pg_bin("pg_ctl"), "start", "-D", node.datadir, "-l", node.log, "-w", "-t", "60", "-s" })
end

local function log_size(node)
  local f = io.open(node.log, "rb")
  if not f then return 0 end
  local n = f:seek("end")
  f:close()
  return n
end

local function log_since(node, offset)
  local s = read_file(node.log) or ""
  return s:sub((offset or 0) + 1)
end

local function port_trouble(text)
  return text:find("could not bind", 1, true) or text:find("Address already in use", 1, true)
      or text:find("could not create lock file", 1, true)
end

-- Starts nodes in parallel; a node whose port turned out to be taken gets a
-- new one and another try.
local function start_nodes(nodes)
  local pending = nodes
  for attempt = 1, 6 do
    local cmds, offsets = {}, {}
    for i, node in ipairs(pending) do
      offsets[i] = log_size(node)
      cmds[i] = pg_ctl_start_cmd(node)
    end
    local results = run_parallel(cmds)
    local again = {}
    for i, r in ipairs(results) do
      local node = pending[i]
      if r.code == 0 then
        node.running = true
      else
        local logtext = log_since(node, offsets[i])
        if attempt < 6 and port_trouble(logtext) then
          set_port(node, M.free_port())
          append_file(node.datadir .. "/postgresql.conf", setting_line("port", node.port))
          again[#again + 1] = node
        else
          error(string.format("cannot start %s on port %d: %s%s\n--- %s\n%s", node_label(node), node.port,
            r.err, r.out, node.log, tail(node.log, 30)), 0)
        end
      end
    end
    pending = again
    if #pending == 0 then return end
  end
end

local function node_conf(bed, node, settings)
  return "\n# switchyard test bed: " .. node_label(node) .. "\n"
    .. setting_line("port", node.port)
    .. setting_line("cluster_name", node.application_name)
    .. setting_line("unix_socket_directories", bed.sockdir)
    .. settings_text(settings)
end

local function new_node(bed, cluster, name, role)
  local node = {
    name = name,
    cluster = cluster,
    role = role,
    host = HOST,
    datadir = bed.dir .. "/" .. cluster .. "-" .. name,
    application_name = cluster .. "." .. name .. "." .. bed.tag,
    running = false,
  }
  node.log = node.datadir .. "/postgresql.log"
  set_port(node, M.free_port())
  bed.nodes[#bed.nodes + 1] = node
  return node
end

-- SWITCHYARD_BED_TRACE=1 prints how long each start-up step takes.
local trace_on = os.getenv("SWITCHYARD_BED_TRACE") == "1"
local function trace(t0, what)
  if trace_on then io.stderr:write(string.format("[bed] %-24s %.3fs\n", what, M.now() - t0)) end
  return M.now()
end

local function build(bed, specs)
  local t = M.now()
  local template = ensure_template()
  t = trace(t, "template")
  local primaries, copies = {}, {}
  for _, spec in ipairs(specs) do
    local c = { name = spec.name, replicas = {}, spec = spec }
    bed.clusters[spec.name] = c
    bed.cluster_order[#bed.cluster_order + 1] = spec.name
    c.primary = new_node(bed, spec.name, "primary", "primary")
    primaries[#primaries + 1] = c.primary
    copies[#copies + 1] = as_pg({ "cp", "-a", template, c.primary.datadir })
  end
  for _, r in ipairs(run_parallel(copies)) do
    if r.code ~= 0 then error("copying the template datadir failed: " .. r.err, 0) end
  end
  for _, spec in ipairs(specs) do
    local p = bed.clusters[spec.name].primary
    append_file(p.datadir .. "/postgresql.conf", node_conf(bed, p, spec.settings))
  end
  t = trace(t, "copy template")
  start_nodes(primaries)
  t = trace(t, "start primaries")

  local replicas, backups = {}, {}
  for _, spec in ipairs(specs) do
    local c = bed.clusters[spec.name]
    for i = 1, spec.replicas or 0 do
      local r = new_node(bed, spec.name, "replica" .. i, "replica")
      r.replica_index = i
      r.upstream = c.primary
      c.replicas[i] = r
      replicas[#replicas + 1] = r
      backups[#backups + 1] = as_pg({ pg_bin("pg_basebackup"), "-h", HOST, "-p", tostring(c.primary.port),
        "-U", "postgres", "-D", r.datadir, "-R", "-X", "stream", "-c", "fast", "-N", "--no-manifest" })
    end
  end
  local backup_results = run_parallel(backups)
  t = trace(t, "pg_basebackup")
  for i, res in ipairs(backup_results) do
    if res.code ~= 0 then
      error("pg_basebackup for " .. node_label(replicas[i]) .. " failed: " .. res.err, 0)
    end
  end
  for _, r in ipairs(replicas) do
    local spec = bed.clusters[r.cluster].spec
    local per = spec.replica_settings and spec.replica_settings[r.replica_index]
    -- The copy carries the primary's log; start the replica's own.
    overwrite_file(r.log, "")
    append_file(r.datadir .. "/postgresql.conf", node_conf(bed, r, per))
  end
  start_nodes(replicas)
  t = trace(t, "start replicas")
  for _, name in ipairs(bed.cluster_order) do
    if #bed.clusters[name].replicas > 0 then bed:wait_replicas_streaming(name) end
  end
  trace(t, "wait streaming")
end

local function validate(specs)
  assert(type(specs) == "table" and #specs > 0, "cluster.start: clusters must be a non-empty array")
  local seen = {}
  for _, spec in ipairs(specs) do
    assert(type(spec.name) == "string" and spec.name:match("^[%w_]+$"),
      "cluster.start: cluster names are [A-Za-z0-9_]+, got " .. tostring(spec.name))
    assert(not seen[spec.name], "cluster.start: duplicate cluster " .. spec.name)
    seen[spec.name] = true
    assert(spec.replicas == nil or (type(spec.replicas) == "number" and spec.replicas >= 0),
      "cluster.start: replicas must be a number")
  end
end

local function make_sentinel(fn)
  if newproxy then -- luacheck: ignore 113
    local proxy = newproxy(true) -- luacheck: ignore 113
    getmetatable(proxy).__gc = fn
    return proxy
  end
  return setmetatable({}, { __gc = fn })
end

--- Starts a bed (see the file header).  Raises (after cleaning up) on failure.
--- opts.empty: a bed with no servers yet (its directory, reaper, spawn()
--- and teardown; another harness such as support.patroni fills it).
function M.start(opts)
  opts = opts or {}
  local specs = opts.clusters or { { name = "main", replicas = 2 } }
  if opts.empty then specs = {} else validate(specs) end
  local area = process_area()
  local dir = make_temp_dir("switchyard-bed")
  local bed = setmetatable({
    dir = dir,
    tag = dir:match("%.([%w]+)$") or dir:match("([^/]+)$"),
    sockdir = dir .. "/sock",
    clusters = {},
    cluster_order = {},
    nodes = {},
    relays = {},
  }, Bed)
  os.execute("mkdir -p " .. quote(bed.sockdir) .. " " .. quote(dir .. "/relays")
    .. (is_root() and (" && chown postgres:postgres " .. quote(bed.sockdir)) or ""))
  spawn_reaper(area.pid, dir, [[
for f in "$d"/relays/*.pid; do [ -f "$f" ] && kill -TERM "$(cat "$f")" 2>/dev/null; done
for f in "$d"/*/postmaster.pid; do
  [ -f "$f" ] || continue
  ( cd / && $SY_REAPER_AS_PG "$SY_REAPER_PG_CTL" stop -D "${f%/postmaster.pid}" -m immediate -w -t 20 ) &
done
wait
for f in "$d"/*/postmaster.pid; do
  [ -f "$f" ] || continue
  pid=$(head -n 1 "$f")
  if alive "$pid"; then
    pkill -9 -P "$pid" 2>/dev/null
    kill -9 "$pid" 2>/dev/null
  fi
done]], { SY_REAPER_AS_PG = pg_user_prefix(), SY_REAPER_PG_CTL = pg_bin("pg_ctl") })
  bed.sentinel = make_sentinel(function() pcall(Bed.teardown, bed) end)
  local ok, err = true, nil
  if #specs > 0 then ok, err = pcall(build, bed, specs) end
  if not ok then
    pcall(Bed.teardown, bed)
    error(err, 2)
  end
  return bed
end

--- The first cluster given to start().
function Bed:first_cluster()
  return self.clusters[self.cluster_order[1]]
end

local function target_conninfo(target, opts)
  local ci = assert(type(target) == "string" and target or (type(target) == "table" and target.conninfo),
    "psql: target must be a node, a relay or a conninfo string")
  if opts and opts.db then ci = ci .. " dbname=" .. opts.db end
  if opts and opts.user then ci = ci .. " user=" .. opts.user end
  return ci
end

-- Returns the command and, for SQL too long for one shell argument, the
-- scratch file that carries it.
local function psql_cmd(target, sql, opts)
  local argv = { "timeout", tostring(opts and opts.timeout or 120), pg_bin("psql"), "-XAtq",
    "-v", "ON_ERROR_STOP=1", "-d", target_conninfo(target, opts), "-f", "-" }
  if #sql <= 32768 then
    return "printf '%s\\n' " .. quote(sql) .. " | ( " .. as_pg(argv) .. " )"
  end
  local file = scratch_name("sql")
  local f = assert(io.open(file, "wb"))
  f:write(sql, "\n")
  f:close()
  return "( " .. as_pg(argv) .. " ) <" .. quote(file), file
end

--- Runs SQL with psql -XAtq; returns ok, stdout (trailing newlines stripped), stderr.
--- opts: db, user (override the conninfo's), timeout (seconds, default 120).
function Bed:try_psql(target, sql, opts) -- luacheck: ignore 212/self
  process_area()
  local cmd, file = psql_cmd(target, sql, opts)
  local code, out, err = M.run(cmd)
  if file then os.remove(file) end
  return code == 0, (out:gsub("\n+$", "")), err
end

--- Runs SQL with psql -XAtq; returns stdout without trailing newlines, raises on error.
function Bed:psql(target, sql, opts)
  local ok, out, err = self:try_psql(target, sql, opts)
  if not ok then
    local label = type(target) == "table" and (target.name and node_label(target)) or tostring(target)
    error("psql on " .. label .. " failed: " .. err .. (out ~= "" and ("\n" .. out) or ""), 2)
  end
  return out
end

--- PID of a node's postmaster (nil when it has no postmaster.pid).
function Bed:postmaster_pid(node) -- luacheck: ignore 212/self
  local s = read_file(node.datadir .. "/postmaster.pid")
  return s and tonumber(s:match("^(%d+)"))
end

--- pg_ctl stop (mode fast|smart|immediate, default fast).
function Bed:stop_node(node, mode) -- luacheck: ignore 212/self
  M.check(as_pg({ pg_bin("pg_ctl"), "stop", "-D", node.datadir, "-m", mode or "fast", "-w", "-t", "60", "-s" }),
    "stopping " .. node_label(node))
  node.running = false
end

--- pg_ctl start -w on the node's port.
function Bed:start_node(node) -- luacheck: ignore 212/self
  local code, out, err = M.run(pg_ctl_start_cmd(node))
  if code ~= 0 then
    error(string.format("cannot start %s: %s%s\n%s", node_label(node), err, out, tail(node.log, 20)), 2)
  end
  node.running = true
end

--- Stop then start.
function Bed:restart_node(node, mode)
  self:stop_node(node, mode)
  self:start_node(node)
end

--- kill -9 the postmaster; returns once it and its children are gone.
function Bed:kill_node(node)
  local pid = self:postmaster_pid(node)
  if not pid or not pid_alive(pid) then error(node_label(node) .. " is not running", 2) end
  local children = {}
  for c in popen_read("pgrep -P " .. pid):gmatch("%d+") do children[#children + 1] = tonumber(c) end
  os.execute("kill -9 " .. pid)
  local function all_gone()
    if pid_alive(pid) then return false end
    for _, c in ipairs(children) do if pid_alive(c) then return false end end
    return true
  end
  -- Children notice the postmaster's death on their own; hurry stragglers.
  local ok = pcall(M.wait_for, all_gone, 3, "children of a killed postmaster")
  if not ok then
    for _, c in ipairs(children) do os.execute("kill -9 " .. c .. " 2>/dev/null") end
    M.wait_for(all_gone, 10, "children of a killed postmaster")
  end
  self:clear_stale_locks(node)
  node.running = false
end

--- After a crash: drops the dead server's SysV segment and lock files.  A
--- PID 1 that never reaps (some containers) leaves the postmaster a zombie,
--- which PostgreSQL's lock check takes for a live server.
function Bed:clear_stale_locks(node)
  local pidfile = node.datadir .. "/postmaster.pid"
  local s = read_file(pidfile)
  if not s then return end
  local pid = tonumber(s:match("^(%d+)"))
  if pid and pid_alive(pid) then return end
  local shmid = s:match("^[^\n]*\n[^\n]*\n[^\n]*\n[^\n]*\n[^\n]*\n[^\n]*\n%s*%d+%s+(%d+)")
  if shmid then
    -- Only while nothing is attached: the id could belong to someone else now.
    for id, nattch in popen_read("ipcs -m 2>/dev/null"):gmatch("\n0x%x+%s+(%d+)%s+%S+%s+%d+%s+%d+%s+(%d+)") do
      if id == shmid and nattch == "0" then os.execute("ipcrm -m " .. shmid .. " 2>/dev/null") end
    end
  end
  os.remove(pidfile)
  local sock = self.sockdir .. "/.s.PGSQL." .. tostring(node.port)
  os.remove(sock .. ".lock")
  os.remove(sock)
end

--- pg_ctl promote -w; the node's role becomes "primary".
function Bed:promote_node(node) -- luacheck: ignore 212/self
  M.check(as_pg({ pg_bin("pg_ctl"), "promote", "-D", node.datadir, "-w", "-t", "60", "-s" }),
    "promoting " .. node_label(node))
  node.role = "primary"
end

local function cluster_of(bed, name)
  local c = name and bed.clusters[name] or (not name and bed:first_cluster())
  if not c then error("no cluster " .. tostring(name), 3) end
  return c
end

--- Waits until the primary's pg_stat_replication lists every running replica
--- of the cluster (default: the first) as streaming.
function Bed:wait_replicas_streaming(cluster_name, timeout)
  local c = cluster_of(self, cluster_name)
  local want = {}
  for _, r in ipairs(c.replicas) do
    if r.running then want[#want + 1] = r.application_name end
  end
  local last = ""
  local ok, err = pcall(M.wait_for, function()
    local good, out = self:try_psql(c.primary,
      "SELECT application_name FROM pg_stat_replication WHERE state = 'streaming'")
    if not good then return false end
    last = out
    local have = {}
    for name in out:gmatch("[^\n]+") do have[name] = true end
    for _, name in ipairs(want) do if not have[name] then return false end end
    return true
  end, timeout or 30, "replicas of " .. c.name .. " to stream")
  if not ok then
    local logs = {}
    for _, r in ipairs(c.replicas) do logs[#logs + 1] = "--- " .. r.log .. "\n" .. tail(r.log, 10) end
    error(tostring(err) .. "; streaming: [" .. last:gsub("\n", ", ") .. "]\n" .. table.concat(logs, "\n"), 2)
  end
  return true
end

--- Waits until a replica (or every running replica of a cluster, given by
--- name) has replayed everything its primary has written so far.
function Bed:wait_replayed(what, timeout)
  local replicas
  if type(what) == "table" and what.datadir then
    replicas = { what }
  else
    replicas = {}
    for _, r in ipairs(cluster_of(self, what).replicas) do
      if r.running then replicas[#replicas + 1] = r end
    end
  end
  for _, r in ipairs(replicas) do
    local primary = self.clusters[r.cluster].primary
    local lsn = self:psql(primary, "SELECT pg_current_wal_lsn()")
    M.wait_for(function()
      local ok, out = self:try_psql(r, "SELECT pg_last_wal_replay_lsn() >= '" .. lsn .. "'::pg_lsn")
      return ok and out == "t"
    end, timeout or 30, node_label(r) .. " to replay " .. lsn)
  end
end

--- PIDs of live processes whose command line (or PostgreSQL process title)
--- contains a bed's tag: its postmasters and all their children.
function M.processes_of(tag)
  -- "[x]yz" matches the tag without matching this pgrep's own shell.
  local pattern = "[" .. tag:sub(1, 1) .. "]" .. tag:sub(2)
  local pids = {}
  for p in popen_read("pgrep -f " .. quote(pattern)):gmatch("%d+") do
    if pid_alive(p) then pids[#pids + 1] = tonumber(p) end
  end
  return pids
end

--- PIDs of every live process of this bed's servers.
function Bed:processes()
  return M.processes_of(self.tag)
end

--- Plain description (no functions) of the bed, e.g. for JSON.
function Bed:describe()
  local function plain(n)
    return {
      name = n.name, cluster = n.cluster, role = n.role, host = n.host, port = n.port,
      conninfo = n.conninfo, datadir = n.datadir, log = n.log, application_name = n.application_name,
    }
  end
  local out = { dir = self.dir, clusters = {}, nodes = {} }
  for _, name in ipairs(self.cluster_order) do
    local c = self.clusters[name]
    local d = { name = name, primary = plain(c.primary), replicas = {} }
    for i, r in ipairs(c.replicas) do d.replicas[i] = plain(r) end
    out.clusters[#out.clusters + 1] = d
  end
  for i, n in ipairs(self.nodes) do out.nodes[i] = plain(n) end
  return out
end

---------------------------------------------------------------------------
-- Delay relay
---------------------------------------------------------------------------

local relay_bin_cached
--- Path of the delay_relay binary: $SWITCHYARD_BUILD/tools/delay_relay, or a
--- private build of spec/support/delay_relay.c when that is missing.
function M.relay_bin()
  if relay_bin_cached then return relay_bin_cached end
  local bin = M.build_dir() .. "/tools/delay_relay"
  local src = M.repo_root() .. "/spec/support/delay_relay.c"
  if not file_exists(bin) then
    bin = process_area().dir .. "/delay_relay"
    M.check("cc -std=c11 -D_GNU_SOURCE -O2 -o " .. quote(bin) .. " " .. quote(src) .. " -lev",
      "building delay_relay")
  end
  relay_bin_cached = bin
  return bin
end

--- Starts a relay on a free loopback port that forwards to `node` and holds
--- every chunk for delay_ms in each direction.
--- Returns { port=, host=, conninfo=, pid=, target=, delay_ms=, stop=function }.
--- Starts a background process (a shell command line; its output goes to
--- out) that teardown stops, and the reaper too if this process dies.
--- Returns { pid, stop(signal) }: stop sends TERM (or signal), waits up to
--- 5 s, then KILL; idempotent.
function Bed:spawn(cmd, out)
  local n = #self.relays + 1
  local base = self.dir .. "/relays/" .. n
  local redirect = out and (" >" .. quote(out) .. " 2>&1")
    or (" >" .. quote(base .. ".out") .. " 2>" .. quote(base .. ".err"))
  local pid = tonumber((popen_read(cmd .. redirect .. " </dev/null & echo $!")))
  assert(pid, "could not start: " .. cmd)
  local f = assert(io.open(base .. ".pid", "w"))
  f:write(tostring(pid), "\n")
  f:close()
  local child = { pid = pid, base = base }
  function child.stop(signal)
    if child.stopped then return end
    child.stopped = true
    os.execute("kill -" .. (signal or "TERM") .. " " .. pid .. " 2>/dev/null")
    local ok = pcall(M.wait_for, function() return not pid_alive(pid) end, 5, "process to exit")
    if not ok then os.execute("kill -9 " .. pid .. " 2>/dev/null") end
    os.remove(base .. ".pid")
  end
  self.relays[n] = child
  return child
end

--- Starts a delaying TCP relay in front of node (spec/support/delay_relay.c).
function Bed:start_relay(node, delay_ms)
  assert(node and node.port, "start_relay: node expected")
  local child = self:spawn(quote(M.relay_bin()) .. " 0 " .. node.port .. " " .. math.floor(delay_ms or 0))
  local port = M.wait_for(function()
    local line = (read_file(child.base .. ".out") or ""):match("^(%d+)\n")
    if line then return tonumber(line) end
    if not pid_alive(child.pid) then
      error("delay_relay exited: " .. (read_file(child.base .. ".err") or ""), 0)
    end
  end, 10, "delay_relay to listen")
  return {
    port = port, host = HOST, pid = child.pid, target = node, delay_ms = delay_ms, stop = child.stop,
    conninfo = string.format("host=%s port=%d dbname=postgres user=postgres connect_timeout=5", HOST, port),
  }
end

---------------------------------------------------------------------------
-- Teardown
---------------------------------------------------------------------------

--- Stops every server (immediate) and relay, removes the directory.  Idempotent.
function Bed:teardown()
  if self.torn_down then return end
  self.torn_down = true
  for _, r in ipairs(self.relays) do pcall(r.stop) end
  local cmds, pids = {}, {}
  for _, node in ipairs(self.nodes) do
    local pid = self:postmaster_pid(node)
    if pid and pid_alive(pid) then
      pids[#pids + 1] = pid
      cmds[#cmds + 1] = as_pg({ pg_bin("pg_ctl"), "stop", "-D", node.datadir, "-m", "immediate",
        "-w", "-t", "20", "-s" })
    end
    node.running = false
  end
  run_parallel(cmds)
  for _, pid in ipairs(pids) do
    if pid_alive(pid) then
      os.execute("pkill -9 -P " .. pid .. " 2>/dev/null; kill -9 " .. pid .. " 2>/dev/null")
    end
  end
  for _, node in ipairs(self.nodes) do pcall(self.clear_stale_locks, self, node) end
  os.execute("rm -rf " .. quote(self.dir))
end

return M

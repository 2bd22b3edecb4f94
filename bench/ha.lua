-- `make bench-ha`: the high-availability figures, on throwaway local
-- clusters (spec/support/cluster.lua) with the engine embedded through
-- LuaJIT's FFI (spec/support/engine.lua).
--
--  1. Failover: SIGKILL of the primary under a write load (4 in flight),
--     failover.mode = "managed", health interval 0.25 s, fall 3; the time
--     from the kill to the first write acknowledged by the new primary.
--     BENCH_HA_RUNS (5) runs, each on a fresh cluster; median, min, max.
--  2. Health polling cost: the engine's own CPU (getrusage) per polled node
--     per second, three nodes polled every 100 ms for BENCH_HA_SECONDS (10)
--     with no queries.
--  3. Read-your-writes: autocommit INSERTs in one session with the
--     consistency level eventual and read_your_writes, rounds alternating;
--     the mean time per write and the difference.
--  4. Switchover: three nodes run by Patroni with etcd
--     (spec/support/patroni.lua), the engine following it
--     (failover.mode = "patroni", interval 0.25 s) under a write load (4 in
--     flight); POST /switchover to the leader's REST API, BENCH_HA_RUNS
--     times in a row, each to the next member.  Reported: from the request
--     to the first write acknowledged by the new leader, the pause in
--     writes (last on the old leader to first on the new), and how long
--     after the new leader said "ready to accept connections" in its log
--     the first write there was acknowledged; median, min, max.
--
--   luajit bench/ha.lua      (SWITCHYARD_BUILD names the build dir)

local script_dir = (arg and arg[0] or ""):match("^(.*)/[^/]*$") or "."
package.path = table.concat({
  script_dir .. "/../spec/?.lua", script_dir .. "/../lua/?.lua",
  script_dir .. "/../policies/?.lua", package.path,
}, ";")
jit.off() -- FFI callbacks run inside ev_run

local ffi = require("ffi")
local cluster = require("support.cluster")
pcall(ffi.cdef, "int setenv(const char *name, const char *value, int overwrite);")
ffi.C.setenv("SWITCHYARD_ROOT", cluster.repo_root(), 0)
ffi.C.setenv("SWITCHYARD_LIB", cluster.build_dir() .. "/libswitchyard.so", 0)
local E = require("support.engine")

pcall(ffi.cdef, [[
struct sy_timeval { long tv_sec; long tv_usec; };
struct sy_rusage { struct sy_timeval ru_utime, ru_stime; long ru_rest[14]; };
int getrusage(int who, struct sy_rusage *usage);
]])

local RUNS = tonumber(os.getenv("BENCH_HA_RUNS") or "5")
local SECONDS = tonumber(os.getenv("BENCH_HA_SECONDS") or "10")

local function cpu_seconds()
  local u = ffi.new("struct sy_rusage")
  ffi.C.getrusage(0, u)
  return tonumber(u.ru_utime.tv_sec) + tonumber(u.ru_utime.tv_usec) / 1e6
    + tonumber(u.ru_stime.tv_sec) + tonumber(u.ru_stime.tv_usec) / 1e6
end

local function median(xs)
  table.sort(xs)
  local n = #xs
  return n % 2 == 1 and xs[(n + 1) / 2] or (xs[n / 2] + xs[n / 2 + 1]) / 2
end

local function with_bed(spec, fn)
  local bed = cluster.start({ clusters = { spec } })
  local ok, err = pcall(fn, bed)
  bed:teardown()
  if not ok then error(err, 0) end
end

-- 1. One failover; returns seconds from the kill to the first write on the
-- new primary.
local function failover_once()
  local took
  local spec = { name = "main", replicas = 2,
    settings = cluster.SYNCHRONOUS }
  with_bed(spec, function(bed)
      local c = bed.clusters.main
      local ports = E.port_names(bed, "main.")
      bed:psql(c.primary, "CREATE TABLE ha_items (v int PRIMARY KEY)")
      local eng = assert(E.new(E.write_config(bed, {
        cluster_extra = [[ failover = { mode = "managed", write_wait = 15 } ]],
        extra = "health = { interval = 0.25, timeout = 1, fall = 3, rise = 1 },",
      })))
      eng:wait_polled()
      local w = eng:writer(function(v)
        return "INSERT INTO ha_items VALUES ($1) RETURNING inet_server_port()", { v }
      end)
      local killed_at
      -- The first write acknowledged by another node than the old primary.
      local function first_new()
        for _, a in ipairs(w.acked) do
          if killed_at and a.at > killed_at and ports[a.value] ~= "main.primary" then return a.at end
        end
      end
      local t_end = cluster.now() + 1
      w.run_while(function() return cluster.now() < t_end end, 5)
      killed_at = cluster.now()
      bed:kill_node(c.primary)
      assert(w.run_while(function() return first_new() == nil end, 30), "writes never resumed")
      took = first_new() - killed_at
      eng:run_until(function() return w.inflight == 0 end, 20)
      eng:close()
    end)
  return took
end

-- 2. CPU per polled node per second.
local function polling_cost()
  local us
  with_bed({ name = "main", replicas = 2 }, function(bed)
    local eng = assert(E.new(E.write_config(bed, {
      extra = "health = { interval = 0.1, timeout = 1 }, pool = { min = 0, max = 4 },",
    })))
    eng:run_for(1)
    local polls0 = 0
    for _, st in pairs(eng:node_stats()) do polls0 = polls0 + st.polls_ok end
    local c0, t0 = cpu_seconds(), cluster.now()
    -- Blocking turns (only the pollers wake the loop); run_for would spin.
    eng:run_until(function() return cluster.now() - t0 >= SECONDS end, SECONDS + 5)
    local c1, t1 = cpu_seconds(), cluster.now()
    local polls1 = 0
    for _, st in pairs(eng:node_stats()) do polls1 = polls1 + st.polls_ok end
    us = (c1 - c0) * 1e6 / (3 * (t1 - t0))
    io.write(("  polling: %d polls of 3 nodes in %.1f s\n"):format(polls1 - polls0, t1 - t0))
    eng:close()
  end)
  return us
end

-- 3. Mean seconds per autocommit write, eventual vs read_your_writes.
local function ryw_cost()
  local per = { eventual = {}, read_your_writes = {} }
  with_bed({ name = "main", replicas = 2 }, function(bed)
    bed:psql(bed.clusters.main.primary, "CREATE TABLE ryw_items (id serial PRIMARY KEY, v int)")
    local eng = assert(E.new(E.write_config(bed, { extra = "health = { interval = 0.1 }," })))
    local n = 2000
    for _ = 1, 3 do
      for _, level in ipairs({ "eventual", "read_your_writes" }) do
        local s = eng:session("bench", "postgres", "ryw")
        assert(E.lib.sy_session_set(s, "consistency", level) == 0)
        local t0 = cluster.now()
        for i = 1, n do
          local r = eng:query("INSERT INTO ryw_items (v) VALUES ($1)", { i }, s)
          assert(r.ok, r.message)
        end
        per[level][#per[level] + 1] = (cluster.now() - t0) / n
      end
    end
    eng:close()
  end)
  return median(per.eventual), median(per.read_your_writes)
end

-- When the server whose log is `path` last became writable (its log's
-- "ready to accept connections" line, in epoch seconds), or nil.
local function writable_at(path)
  local f = io.open(path)
  if not f then return nil end
  local stamp
  for line in f:lines() do
    local t = line:match("^(%d+%-%d+%-%d+ %d+:%d+:%d+%.%d+ %a+) .*ready to accept connections$")
    if t then stamp = t end
  end
  f:close()
  if not stamp then return nil end
  local p = io.popen("date -d " .. cluster.quote(stamp) .. " +%s.%N")
  local v = tonumber(p:read("*l"))
  p:close()
  return v
end

-- 4. Switchovers under Patroni; returns { took = {...}, pause = {...},
-- follow = {...}, failed = {...} }.
local function switchover_runs()
  local patroni = require("support.patroni")
  local bed = patroni.start()
  local out = { took = {}, pause = {}, follow = {}, failed = {} }
  local ok, err = pcall(function()
    local ports = E.port_names(bed, "main.")
    bed:psql(bed.clusters.main.primary, "CREATE TABLE sw_items (v int PRIMARY KEY)")
    local urls = {}
    for i, u in ipairs(bed.patroni.urls) do urls[i] = ("%q"):format(u) end
    local eng = assert(E.new(E.write_config(bed, { auto_roles = true,
      cluster_extra = ("failover = { mode = \"patroni\", patroni = { %s }, write_wait = 15 }")
        :format(table.concat(urls, ", ")),
      extra = "health = { interval = 0.25, timeout = 1, fall = 3, rise = 1 },",
    })))
    eng:wait_polled()
    for run = 1, RUNS do
      local members = assert(bed.patroni.cluster(), "Patroni does not answer")
      local leader
      for name, m in pairs(members) do if m.role == "leader" then leader = name end end
      local li = tonumber(leader:match("%d+"))
      local candidate = "pg" .. (li % #bed.nodes + 1)
      local w = eng:writer(function(seq)
        return "INSERT INTO sw_items VALUES ($1) RETURNING inet_server_port()", { run * 1000000 + seq }
      end)
      local t_end = cluster.now() + 1
      w.run_while(function() return cluster.now() < t_end end, 5)
      local asked = cluster.now()
      local req = bed:spawn(("curl -s -m 60 -XPOST -d %s %s/switchover"):format(
        cluster.quote(('{"leader": "%s", "candidate": "%s"}'):format(leader, candidate)),
        bed.patroni.by_name[leader].rest_url), bed.dir .. "/switchover." .. run .. ".out")
      local function on(name, after)
        for _, a in ipairs(w.acked) do
          if a.at > after and ports[a.value] == "main." .. name then return a.at end
        end
      end
      assert(w.run_while(function() return on(candidate, asked) == nil end, 60), "writes never moved")
      local first = on(candidate, asked)
      local last_old = asked
      for _, a in ipairs(w.acked) do
        if ports[a.value] == "main." .. leader then last_old = math.max(last_old, a.at) end
      end
      eng:run_until(function() return w.inflight == 0 end, 20)
      cluster.wait_for(function() return not cluster.pid_alive(req.pid) end, 60, "the switchover request")
      out.took[run], out.pause[run], out.failed[run] = first - asked, first - last_old, #w.failures
      local writable = writable_at(bed.patroni.by_name[candidate].log)
      out.follow[run] = writable and first - writable or 0 / 0
      io.write(("  switchover run %d (%s -> %s): first write on the new leader %.3f s after the request "
        .. "and %.3f s after it became writable, writes paused %.3f s, %d failed%s\n"):format(run, leader,
        candidate, out.took[run], out.follow[run], out.pause[run], #w.failures,
        #w.failures > 0 and (" (" .. w.failures[1].message:gsub("%s+$", "") .. ")") or ""))
      patroni.wait_healthy(bed, 90)
    end
    eng:close()
  end)
  bed:teardown()
  if not ok then error(err, 0) end
  return out
end

io.write(("HA benchmark: %d failover runs, polling for %d s\n"):format(RUNS, SECONDS))
local times = {}
for i = 1, RUNS do
  times[i] = failover_once()
  io.write(("  failover run %d: first write on the new primary %.3f s after the kill\n"):format(i, times[i]))
end
local shown = {}
for i, t in ipairs(times) do shown[i] = t end
local poll_us = polling_cost()
local ev, ryw = ryw_cost()
local sw = switchover_runs()
table.sort(shown)
io.write("\n")
io.write(("failover (kill -9 to first write, interval 0.25 s, fall 3): median %.3f s, min %.3f, max %.3f\n")
  :format(median(times), shown[1], shown[#shown]))
io.write(("health polling: %.1f us CPU per node per second at 100 ms (%.1f us per poll)\n")
  :format(poll_us, poll_us / 10))
io.write(("autocommit write, one session: eventual %.1f us, read_your_writes %.1f us (%+.1f us)\n")
  :format(ev * 1e6, ryw * 1e6, (ryw - ev) * 1e6))
local function spread(xs)
  local sorted = {}
  for i, x in ipairs(xs) do sorted[i] = x end
  table.sort(sorted)
  return median(sorted), sorted[1], sorted[#sorted]
end
local failed = 0
for _, n in ipairs(sw.failed) do failed = failed + n end
io.write(("switchover (Patroni, POST /switchover to first write on the new leader): median %.3f s, "
  .. "min %.3f, max %.3f\n"):format(spread(sw.took)))
io.write(("switchover: new leader writable (its log) to our first write there: median %.3f s, "
  .. "min %.3f, max %.3f\n"):format(spread(sw.follow)))
local pause_med, pause_min, pause_max = spread(sw.pause)
io.write(("switchover write pause (last write on the old leader to first on the new): median %.3f s, "
  .. "min %.3f, max %.3f; %d writes failed in %d switchovers\n"):format(pause_med, pause_min, pause_max,
  failed, #sw.failed))

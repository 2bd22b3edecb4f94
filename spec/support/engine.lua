-- Drives a real libswitchyard engine from specs through LuaJIT's FFI: the
-- spec owns a libev loop, the engine runs on it as on any host loop, and
-- helpers submit queries and turn libpq results into Lua tables.
local sy = require("support.ffi")
local ffi, lib, ev, pq = sy.ffi, sy.lib, sy.C, sy.pq

-- FFI callbacks must not be entered from JIT-compiled code; the engine calls
-- back from inside ev_run, so keep this module's callers interpreted.
jit.off(true, true)

local M = { lib = lib }

local EVRUN_ONCE = 2
local PGRES_TUPLES_OK = 2

local Engine = {}
Engine.__index = Engine

local function reply_to_table(reply)
  local r = {
    status = reply.status,
    node = sy.str(reply.node),
    sqlstate = sy.str(reply.sqlstate),
    message = sy.str(reply.message),
    detail = sy.str(reply.detail),
    retried = reply.retried == 1,
    results = {},
    notices = {},
  }
  for i = 0, reply.nresults - 1 do
    local res = reply.results[i]
    local out = { status = tonumber(pq.PQresultStatus(res)), rows = {} }
    if out.status == PGRES_TUPLES_OK then
      for row = 0, pq.PQntuples(res) - 1 do
        local cols = {}
        for col = 0, pq.PQnfields(res) - 1 do
          if pq.PQgetisnull(res, row, col) == 1 then
            cols[col + 1] = false
          else
            cols[col + 1] = ffi.string(pq.PQgetvalue(res, row, col))
          end
        end
        out.rows[#out.rows + 1] = cols
      end
    end
    out.command = ffi.string(pq.PQcmdStatus(res))
    r.results[#r.results + 1] = out
  end
  for i = 0, reply.nnotices - 1 do
    r.notices[#r.notices + 1] = ffi.string(reply.notices[i])
  end
  r.ok = r.status == 0 and r.sqlstate == nil
  -- the first value of the last result, the common case in specs
  local last = r.results[#r.results]
  r.value = last and last.rows[1] and last.rows[1][1]
  return r
end

-- Creates an engine on a loop the spec owns.  opts: home, log_level,
-- watch_files, handle_sighup, start (default true).
function M.new(config_path, opts)
  opts = opts or {}
  local self = setmetatable({ pending = {}, next_id = 0, events = {}, logs = {} }, Engine)
  self.loop = ev.ev_loop_new(0)
  self.query_cb = ffi.cast("sy_query_cb", function(ud, reply)
    local id = tonumber(ffi.cast("intptr_t", ud))
    local done = self.pending[id]
    self.pending[id] = nil
    if done then done(reply_to_table(reply)) end
  end)
  self.event_cb = ffi.cast("sy_event_cb", function(_, e)
    self.events[#self.events + 1] = {
      type = ffi.string(e.name), node = sy.str(e.node), cluster = sy.str(e.cluster),
      message = sy.str(e.message),
    }
  end)
  self.log_cb = ffi.cast("sy_log_cb", function(_, level, msg)
    self.logs[#self.logs + 1] = { level = level, message = ffi.string(msg) }
  end)
  local o = ffi.new("sy_engine_options")
  o.config_path = config_path
  o.loop = self.loop
  o.on_event = self.event_cb
  o.on_log = self.log_cb
  o.log_level = opts.log_level or 0
  o.home = opts.home
  o.watch_files = opts.watch_files and 1 or 0
  o.handle_sighup = opts.handle_sighup and 1 or 0
  local out = ffi.new("sy_engine *[1]")
  local err = ffi.new("char[4096]")
  local rc = lib.sy_engine_new(out, o, err, 4096)
  if rc ~= 0 then
    self:_release_callbacks()
    ev.ev_loop_destroy(self.loop)
    return nil, ffi.string(err), rc
  end
  self.e = out[0]
  if opts.start ~= false then
    assert(lib.sy_engine_start(self.e) == 0)
  end
  return self
end

function Engine:_release_callbacks()
  self.query_cb:free()
  self.event_cb:free()
  self.log_cb:free()
end

-- Runs the loop once (blocking until something happens or timeout).
function Engine:turn()
  ev.ev_run(self.loop, EVRUN_ONCE)
end

-- Runs the loop until pred() is true or seconds pass; returns pred().
function Engine:run_until(pred, seconds)
  local deadline = os.time() + (seconds or 30)
  while not pred() do
    if os.time() > deadline then return false end
    self:turn()
  end
  return true
end

-- Runs the loop for about `seconds`, for timers to fire.
function Engine:run_for(seconds)
  ev.ev_now_update(self.loop)
  local t0 = ev.ev_now(self.loop)
  repeat
    ev.ev_run(self.loop, 1) -- EVRUN_NOWAIT
    ffi.C.usleep(5000)
    ev.ev_now_update(self.loop)
  until ev.ev_now(self.loop) - t0 >= seconds
end

-- Submits a query; done(reply_table) fires later.  Returns rc of sy_query.
function Engine:submit(sql, params, done, session, opts)
  local a = ffi.new("sy_query_args")
  a.sql = sql
  local keep, strings
  if params and #params > 0 then
    -- the Lua strings must stay alive until sy_query() has copied them
    strings = {}
    keep = ffi.new("const char *[?]", #params)
    for i, v in ipairs(params) do
      if v ~= false then
        strings[i] = tostring(v)
        keep[i - 1] = strings[i]
      end
    end
    a.nparams = #params
    a.param_values = keep
  end
  a.session = session
  if opts and opts.timeout then a.timeout = opts.timeout end
  if opts and opts.result_format then a.result_format = opts.result_format end
  self.next_id = self.next_id + 1
  local id = self.next_id
  self.pending[id] = done
  local rc = lib.sy_query(self.e, a, self.query_cb, ffi.cast("void *", id))
  if rc ~= 0 then self.pending[id] = nil end
  self.last_params = strings -- referenced until here
  return rc
end

-- Runs one query to completion and returns the reply table.
function Engine:query(sql, params, session, opts)
  local reply
  local rc = self:submit(sql, params, function(r) reply = r end, session, opts)
  if rc ~= 0 then
    return { status = rc, ok = false, message = ffi.string(lib.sy_strerror(rc)) }
  end
  assert(self:run_until(function() return reply ~= nil end, 60), "query never completed: " .. sql)
  return reply
end

-- Runs queries with `concurrency` in flight; make(i) returns sql, params.
-- Returns the array of replies in submission order.
function Engine:query_many(n, concurrency, make, session)
  local replies, submitted, completed = {}, 0, 0
  local function submit_next()
    submitted = submitted + 1
    local i = submitted
    local sql, params = make(i)
    local rc = self:submit(sql, params, function(r)
      replies[i] = r
      completed = completed + 1
    end, session)
    if rc ~= 0 then
      replies[i] = { status = rc, ok = false }
      completed = completed + 1
    end
  end
  while submitted < math.min(n, concurrency) do submit_next() end
  while completed < n do
    self:turn()
    while submitted < n and submitted - completed < concurrency do submit_next() end
  end
  return replies
end

function Engine:session(user, database, app)
  local out = ffi.new("sy_session *[1]")
  assert(lib.sy_session_new(self.e, out, user, database, app) == 0)
  return ffi.gc(out[0], lib.sy_session_free)
end

function M.ffi_session_pinned(s)
  return lib.sy_session_pinned(s) == 1
end

-- Frees a session now (instead of at garbage collection).
function M.free_session(s)
  lib.sy_session_free(ffi.gc(s, nil))
end

function Engine:reload()
  local rc = lib.sy_engine_reload(self.e)
  return rc, ffi.string(lib.sy_engine_last_error(self.e))
end

function Engine:node_stats()
  local out, st = {}, ffi.new("sy_node_stats")
  for i = 0, lib.sy_node_count(self.e) - 1 do
    assert(lib.sy_node_stats_get(self.e, i, st) == 0)
    out[ffi.string(st.name)] = {
      role = ffi.string(st.role), healthy = st.healthy == 1,
      queries = tonumber(st.queries), errors = tonumber(st.errors),
      retries = tonumber(st.retries), inflight = st.inflight,
      idle = st.pool_idle, busy = st.pool_busy, connecting = st.pool_connecting,
      waiting = st.pool_waiting, exhausted = tonumber(st.pool_exhausted),
      latency_avg_ms = st.latency_avg_ms, p50 = st.latency_p50_ms,
      p95 = st.latency_p95_ms, p99 = st.latency_p99_ms,
      split_brain = st.split_brain == 1, fenced = st.fenced == 1, timeline = st.timeline,
      wal_position = st.wal_position, lag_bytes = st.lag_bytes, lag_ms = st.lag_ms,
      rtt_ms = st.rtt_ms, polls_ok = tonumber(st.polls_ok), polls_failed = tonumber(st.polls_failed),
      down_for_s = st.down_for_s, last_error = ffi.string(st.last_error),
      patroni = st.patroni ~= nil and ffi.string(st.patroni) or nil,
    }
  end
  return out
end

function Engine:engine_stats()
  local st = ffi.new("sy_engine_stats")
  assert(lib.sy_engine_stats_get(self.e, st) == 0)
  return {
    queries = tonumber(st.queries), rejected = tonumber(st.rejected),
    policy_errors = tonumber(st.policy_errors), reloads = tonumber(st.reloads),
    reload_failures = tonumber(st.reload_failures), route_avg_us = st.route_avg_us,
  }
end

function Engine:events_of(kind)
  local out = {}
  for _, e in ipairs(self.events) do
    if e.type == kind then out[#out + 1] = e end
  end
  return out
end

-- Stops gracefully, then frees engine and loop.
-- A steady load: pump() keeps `concurrency` (4) statements in flight,
-- make(seq) giving each one's sql and params.  Acknowledged ones land in
-- w.acked ({ seq, value, at }), failed ones in w.failures ({ seq, sent,
-- message }); `at` and `sent` are cluster.now() times.  w.run_while(pred,
-- timeout) pumps until pred() is false.
function Engine:writer(make, concurrency)
  local now = require("support.cluster").now
  local w = { acked = {}, failures = {}, inflight = 0, seq = 0 }
  function w.pump()
    while w.inflight < (concurrency or 4) do
      w.seq = w.seq + 1
      local seq, sent = w.seq, now()
      w.inflight = w.inflight + 1
      local sql, params = make(seq)
      self:submit(sql, params, function(r)
        w.inflight = w.inflight - 1
        if r.ok then
          w.acked[#w.acked + 1] = { seq = seq, value = r.value, at = now() }
        else
          w.failures[#w.failures + 1] = { seq = seq, sent = sent, message = r.message }
        end
      end)
    end
  end
  function w.run_while(pred, timeout)
    return self:run_until(function()
      w.pump()
      return not pred()
    end, timeout)
  end
  return w
end

-- Waits until every node has been polled once (roles and figures known).
function Engine:wait_polled(timeout)
  return self:run_until(function()
    for _, st in pairs(self:node_stats()) do if st.polls_ok == 0 then return false end end
    return true
  end, timeout or 10)
end

-- Every event so far, one a line, for failure messages.
function Engine:event_log()
  local lines = {}
  for _, event in ipairs(self.events) do
    lines[#lines + 1] = ("%s %s: %s"):format(event.type, tostring(event.node), tostring(event.message))
  end
  return table.concat(lines, "\n")
end

function Engine:close()
  if not self.e then return end
  local stopped = false
  lib.sy_engine_stop(self.e, nil, nil)
  self:run_until(function()
    stopped = true
    return next(self.pending) == nil
  end, 10)
  lib.sy_engine_free(self.e)
  self.e = nil
  self:_release_callbacks()
  ev.ev_loop_destroy(self.loop)
  return stopped
end

-- Maps each server's port (as inet_server_port() prints it) to its node
-- name ("primary", "replica1", ...), prefixed with `prefix` if given: specs
-- ask PostgreSQL which server answered, never the engine.
function M.port_names(bed, prefix)
  local out = {}
  for _, node in ipairs(bed.nodes) do
    out[tostring(node.port)] = (prefix or "") .. node.name
  end
  return out
end

-- Counts which server answered each reply (ports: from port_names), and
-- the failed and retried ones, over replies[from..to].  count.why shows it
-- all, failures' SQLSTATEs and messages included, for assertion messages.
function M.tally(replies, ports, from, to)
  local count, names, failures = { failed = 0, retried = 0 }, {}, {}
  for _, name in pairs(ports) do
    count[name] = 0
    names[#names + 1] = name
  end
  table.sort(names)
  for i = from or 1, to or #replies do
    local r = replies[i]
    if r.ok then
      local who = assert(ports[r.value], "unknown server port " .. tostring(r.value))
      count[who] = count[who] + 1
    else
      count.failed = count.failed + 1
      failures[#failures + 1] = ("%s %s"):format(tostring(r.sqlstate), tostring(r.message))
    end
    if r.retried then count.retried = count.retried + 1 end
  end
  local parts = {}
  for _, name in ipairs(names) do parts[#parts + 1] = ("%s=%d"):format(name, count[name]) end
  count.why = ("%s failed=%d retried=%d %s"):format(table.concat(parts, " "), count.failed,
    count.retried, table.concat(failures, "; "))
  return count
end

-- A fresh temporary directory (the caller removes it).
function M.tmpdir()
  local pipe = assert(io.popen("mktemp -d"))
  local dir = pipe:read("*l")
  pipe:close()
  return dir
end

-- Writes a config file for a test bed and returns its path.
-- opts.clusters: override; opts.extra: Lua source of extra top-level keys.
function M.write_config(bed, opts)
  opts = opts or {}
  local lines = { "return {", "  clusters = {" }
  for name, c in pairs(bed.clusters) do
    lines[#lines + 1] = ("    %s = { nodes = {"):format(name)
    local function node(n, role, extra)
      -- opts.auto_roles: no role given, health polling finds them
      local r = opts.auto_roles and "" or (" role = %q,"):format(role)
      lines[#lines + 1] = ("      { name = %q,%s conninfo = %q%s },")
        :format(n.name, r, n.conninfo, extra or "")
    end
    node(c.primary, "primary")
    for i, r in ipairs(c.replicas) do
      local w = opts.weights and opts.weights[i]
      node(r, "replica", (w and (", weight = " .. w) or "") .. (opts.replica_extra or ""))
    end
    lines[#lines + 1] = "    }" .. (opts.cluster_extra and (", " .. opts.cluster_extra) or "") .. " },"
  end
  lines[#lines + 1] = "  },"
  if opts.default_cluster then
    lines[#lines + 1] = ("  default_cluster = %q,"):format(opts.default_cluster)
  end
  lines[#lines + 1] = "  log_level = " .. ("%q"):format(opts.log_level or "warn") .. ","
  if opts.extra then lines[#lines + 1] = opts.extra end
  lines[#lines + 1] = "}"
  local path = opts.path or (M.tmpdir() .. "/config.lua")
  local f = assert(io.open(path, "w"))
  f:write(table.concat(lines, "\n"), "\n")
  f:close()
  return path
end

ffi.cdef([[
int usleep(unsigned int usec);
void ev_now_update(struct ev_loop *loop);
]])

return M

-- Hot reload under load: policy edits picked up by the file watcher and by
-- SIGHUP while 10,000 queries run, with zero failed queries and the new
-- routing in force from the first query after each swap; a broken policy is
-- refused and the running one keeps serving.
local cluster = require("support.cluster")
local E = require("support.engine")
local ffi = require("ffi")

ffi.cdef([[
int kill(int pid, int sig);
int getpid(void);
]])
local SIGHUP = 1

local function policy_source(target, marker)
  return ([[
-- generation %s
local policy = {}
local sy = require("switchyard")
sy.shared.loads = (sy.shared.loads or 0) + 1
function policy.route(q)
  if q.sql == "SELECT 'loads'" then
    return nil, "loads=" .. sy.shared.loads, "P0001"
  end
  if q.kind == "read" then
    return q.topology.by_name[%q]
  end
  return q.topology.clusters.main.primary
end
return policy
]]):format(marker, target)
end

local function write(path, text)
  local tmp = path .. ".tmp"
  local f = assert(io.open(tmp, "w"))
  f:write(text)
  f:close()
  assert(os.rename(tmp, path))
end

describe("hot reload", function()
  local bed, eng, dir, policy_path, ports

  setup(function()
    bed = cluster.start({ clusters = { { name = "main", replicas = 2 } } })
    ports = E.port_names(bed, "main.")
    dir = E.tmpdir()
    policy_path = dir .. "/policy.lua"
    write(policy_path, policy_source("main.replica1", 0))
    local path = E.write_config(bed, { path = dir .. "/config.lua", extra = [[ policy = "policy.lua", ]] })
    eng = assert(E.new(path, { watch_files = true, handle_sighup = true }))
  end)

  teardown(function()
    if eng then eng:close() end
    if bed then bed:teardown() end
    if dir then os.execute("rm -rf " .. dir) end
  end)

  it("reloads ten times during 10,000 queries with none failed", function()
    local targets = { "main.replica2", "main.replica1" }
    local expected = "main.replica1"   -- what the running policy picks
    local seen_reloads = 0
    local reloads_requested = 0
    local wrong, failed = {}, 0
    local n, concurrency = 10000, 16
    local submitted, completed = 0, 0
    local pending_target, last_written

    local function submit()
      submitted = submitted + 1
      local i = submitted
      local want = expected
      local rc = eng:submit("SELECT inet_server_port()", nil, function(r)
        completed = completed + 1
        if not r.ok then
          failed = failed + 1
        elseif ports[r.value] ~= want then
          wrong[#wrong + 1] = ("query %d: wanted %s, served by %s"):format(i, want, tostring(ports[r.value]))
        end
      end)
      assert(rc == 0)
    end

    while completed < n do
      -- Reloads seen so far first: a second reload of the previous file (the
      -- watcher and SIGHUP both fire) must be taken for that file, not for
      -- the one written next.
      local ok_events = #eng:events_of("reload_ok")
      if ok_events > seen_reloads then
        -- the swap happened: every query submitted from now on must follow it
        -- (the watcher and SIGHUP may both reload the same file: each swap
        -- loads the latest complete file, written atomically by rename)
        seen_reloads = ok_events
        expected = last_written
        pending_target = nil
      end
      -- every 1000 queries: change the policy, by file edit or by SIGHUP
      if pending_target == nil and reloads_requested < 10 and submitted >= (reloads_requested + 1) * 900 then
        reloads_requested = reloads_requested + 1
        pending_target = targets[(reloads_requested - 1) % 2 + 1]
        last_written = pending_target
        write(policy_path, policy_source(pending_target, reloads_requested))
        if reloads_requested % 2 == 0 then
          ffi.C.kill(ffi.C.getpid(), SIGHUP)
        end
      end
      while submitted < n and submitted - completed < concurrency do submit() end
      eng:turn()
    end
    assert.are.equal(0, failed)
    assert.are.same({}, wrong)
    assert.is_true(seen_reloads >= 10, "only " .. seen_reloads .. " reloads")
    assert.are.equal(0, eng:engine_stats().reload_failures)
  end)

  it("keeps sy.shared across reloads", function()
    local function loads()
      local r = eng:query("SELECT 'loads'")
      return tonumber(r.message:match("loads=(%d+)"))
    end
    local before = loads()
    assert.is_true(before >= 11, "loads=" .. before)
    write(policy_path, policy_source("main.replica1", "shared"))
    assert.are.equal(0, (eng:reload()))
    -- The file watcher may reload the same edit once more.
    local after = loads()
    assert.is_true(after == before + 1 or after == before + 2, ("loads %d -> %d"):format(before, after))
  end)

  it("reads a statement text again after a reload changes write_functions", function()
    -- Verdicts are cached by text: a reload must not keep the old verdict.
    bed:psql(bed.clusters.main.primary,
      "CREATE OR REPLACE FUNCTION sy_touch() RETURNS int LANGUAGE sql AS 'SELECT inet_server_port()'")
    bed:wait_replayed("main")
    local function served()
      local r = eng:query("SELECT sy_touch()")
      assert.is_true(r.ok, r.message)
      return ports[r.value]
    end
    assert.are.equal("main.replica1", served())
    assert.are.equal("main.replica1", served())
    local path = dir .. "/config.lua"
    E.write_config(bed, { path = path, extra = [[ policy = "policy.lua", write_functions = { "sy_touch" }, ]] })
    assert.are.equal(0, (eng:reload()))
    assert.are.equal("main.primary", served())
    E.write_config(bed, { path = path, extra = [[ policy = "policy.lua", ]] })
    assert.are.equal(0, (eng:reload()))
    assert.are.equal("main.replica1", served())
  end)

  it("refuses a broken policy, names file and line, and keeps serving", function()
    local good = eng:query("SELECT inet_server_port()")
    assert.is_true(good.ok)
    local serving = ports[good.value]
    write(policy_path, "local policy = {}\nfunction policy.route(q)\n  return q.topology..\nend\nreturn policy\n")
    local rc, err = eng:reload()
    assert.are.equal(E.lib.SY_EPOLICY, rc)
    assert.matches("policy%.lua:%d+:", err)
    assert.is_true(#eng:events_of("reload_failed") >= 1)
    for _ = 1, 20 do
      local r = eng:query("SELECT inet_server_port()")
      assert.is_true(r.ok, r.message)
      assert.are.equal(serving, ports[r.value])
    end
    -- a policy without route() is refused too
    write(policy_path, "return { }\n")
    rc, err = eng:reload()
    assert.are.equal(E.lib.SY_EPOLICY, rc)
    assert.matches("route", err)
    write(policy_path, policy_source(serving, "restored"))
    -- a bad config key is refused with its path
    local cfg = dir .. "/config.lua"
    local f = assert(io.open(cfg))
    local text = f:read("*a")
    f:close()
    write(cfg, (text:gsub("log_level", "pool = { max = 'x' }, log_level")))
    rc, err = eng:reload()
    assert.are.equal(E.lib.SY_ECONFIG, rc)
    assert.matches("pool%.max", err)
    assert.is_true(eng:query("SELECT 1").ok)
    write(cfg, text)
  end)
  it("refuses a second SIGHUP owner in the process instead of aborting", function()
    local other = assert(E.new(dir .. "/config.lua", { handle_sighup = true, start = false }))
    assert.are.equal(E.lib.SY_EBUSY, E.lib.sy_engine_start(other.e))
    -- started all the same, without the signal
    assert.is_true(other:query("SELECT 1").ok)
    other:close()
  end)

  it("reloads on SIGHUP alone, and on edits of the config and of a balancer file", function()
    eng:close()
    eng = nil
    write(policy_path, policy_source("main.replica1", "sighup"))
    local e = assert(E.new(dir .. "/config.lua", { handle_sighup = true, watch_files = false }))
    eng = e
    local function served() return ports[e:query("SELECT inet_server_port()").value] end
    assert.are.equal("main.replica1", served())
    write(policy_path, policy_source("main.replica2", "sighup 2"))
    e:run_for(0.5) -- no watcher: nothing changes
    assert.are.equal("main.replica1", served())
    ffi.C.kill(ffi.C.getpid(), SIGHUP)
    assert.is_true(e:run_until(function() return #e:events_of("reload_ok") == 1 end, 10))
    assert.are.equal("main.replica2", served())
    e:close()
    eng = nil

    -- the config file itself and a balancer loaded by path are watched
    local balancer = dir .. "/mine.lua"
    write(balancer, "return { pick = function(c) return c[1] end }\n")
    local cfg = E.write_config(bed, { path = dir .. "/watched.lua", extra = [[
      policy_options = { balancer = "mine.lua" },
    ]] })
    local w = assert(E.new(cfg, { watch_files = true }))
    eng = w
    local function served_w() return ports[w:query("SELECT inet_server_port()").value] end
    assert.are.equal("main.replica1", served_w())
    write(balancer, "return { pick = function(c) return c[#c] end }\n")
    assert.is_true(w:run_until(function() return #w:events_of("reload_ok") >= 1 end, 10))
    assert.are.equal("main.replica2", served_w())
    local text = assert(io.open(cfg)):read("*a")
    write(cfg, (text:gsub('balancer = "mine.lua"', 'balancer = "round_robin"')))
    assert.is_true(w:run_until(function() return #w:events_of("reload_ok") >= 2 end, 10))
    local seen = {}
    for _ = 1, 4 do seen[served_w()] = true end
    assert.is_true(seen["main.replica1"] and seen["main.replica2"])
  end)
end)

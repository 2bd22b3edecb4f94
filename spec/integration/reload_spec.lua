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
      local ok_events = #eng:events_of("reload_ok")
      if ok_events > seen_reloads then
        -- the swap happened: every query submitted from now on must follow it
        -- (the watcher and SIGHUP may both reload the same file: each swap
        -- loads the latest complete file, written atomically by rename)
        seen_reloads = ok_events
        expected = last_written
        pending_target = nil
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
    assert.are.equal(before + 1, loads())
  end)

  it("refuses a broken policy, names file and line, and keeps serving", function()
    local good = eng:query("SELECT inet_server_port()")
    assert.is_true(good.ok)
    local serving = ports[good.value]
    write(policy_path, "local policy = {}\nfunction policy.route(q)\n  return q.topology..\nend\nreturn policy\n")
    local rc, err = eng:reload()
    assert.are_not.equal(0, rc)
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
    assert.are_not.equal(0, rc)
    assert.matches("route", err)
    -- a bad config key is refused with its path
    local cfg = dir .. "/config.lua"
    local f = assert(io.open(cfg))
    local text = f:read("*a")
    f:close()
    write(cfg, (text:gsub("log_level", "pool = { max = 'x' }, log_level")))
    rc, err = eng:reload()
    assert.are_not.equal(0, rc)
    assert.matches("pool%.max", err)
    assert.is_true(eng:query("SELECT 1").ok)
  end)
end)

-- A policy that raises, loops forever, returns nonsense or refuses a query
-- fails only that query, with a clear message and SQLSTATE; the engine keeps
-- serving the next ones.
local cluster = require("support.cluster")
local E = require("support.engine")

local POLICY = [[
local sy = require("switchyard")
local router = require("lib.split").new(sy)
local policy = {}
function policy.route(q)
  if q.hints.boom then
    error("boom on purpose")
  end
  if q.hints.spin then
    local n = 0
    while true do n = n + 1 end
  end
  if q.hints.nonsense then
    return 42
  end
  if q.hints.ghost then
    return { node = "main.nowhere" }
  end
  if q.sql:upper():match("^%s*DELETE") and not q.sql:upper():match("WHERE") then
    return nil, "DELETE without WHERE is refused by policy", "42501"
  end
  return router.route(q, q.topology.clusters.main)
end
return policy
]]

describe("policy failures", function()
  local bed, eng, dir

  setup(function()
    bed = cluster.start({ clusters = { { name = "main", replicas = 1 } } })
    dir = E.tmpdir()
    local f = assert(io.open(dir .. "/policy.lua", "w"))
    f:write(POLICY)
    f:close()
    local path = E.write_config(bed, {
      path = dir .. "/config.lua",
      extra = [[ policy = "policy.lua", route_budget = { instructions = 200000, ms = 200 }, ]],
    })
    eng = assert(E.new(path))
    bed:psql(bed.clusters.main.primary, "CREATE TABLE t (x int); INSERT INTO t VALUES (1)")
  end)

  teardown(function()
    if eng then eng:close() end
    if bed then bed:teardown() end
    if dir then os.execute("rm -rf " .. dir) end
  end)

  local function works()
    local r = eng:query("SELECT 1")
    assert.is_true(r.ok, r.message)
    assert.are.equal("1", r.value)
  end

  it("a raising policy fails only its query, naming file and line", function()
    local r = eng:query("SELECT 1 /* sy: boom=1 */")
    assert.is_false(r.ok)
    assert.are.equal("XX000", r.sqlstate)
    assert.matches("policy%.lua:6: boom on purpose", r.message)
    works()
    assert.is_true(#eng:events_of("policy_error") >= 1)
  end)

  it("a policy that loops forever is stopped by its budget", function()
    local r = eng:query("SELECT 1 /* sy: spin=1 */")
    assert.is_false(r.ok)
    assert.are.equal("XX000", r.sqlstate)
    assert.matches("budget", r.message)
    assert.matches("policy%.lua:%d+", r.message)
    works()
    -- and again: the state is still sound after an interrupted call
    assert.is_false(eng:query("SELECT 1 /* sy: spin=1 */").ok)
    works()
  end)

  -- Each limit of the budget stops the loop on its own, and every decision
  -- after it runs as before.
  it("stops a loop by either limit of the budget alone", function()
    local path = dir .. "/config.lua"
    local function with_budget(budget)
      local f = assert(io.open(path))
      local text = f:read("*a")
      f:close()
      text = text:gsub("route_budget = %b{}", "route_budget = " .. budget)
      f = assert(io.open(path, "w"))
      f:write(text)
      f:close()
      local rc, err = eng:reload()
      assert.are.equal(0, rc, err)
    end
    with_budget("{ instructions = 100000, ms = 600000 }")
    local r = eng:query("SELECT 1 /* sy: spin=1 */")
    assert.is_false(r.ok)
    assert.matches("budget of 100000 instructions", r.message)
    works()
    with_budget("{ instructions = 1000000000000, ms = 30 }")
    r = eng:query("SELECT 1 /* sy: spin=1 */")
    assert.is_false(r.ok)
    assert.matches("time budget of 30 ms", r.message)
    works()
    for _ = 1, 20 do works() end
    with_budget("{ instructions = 200000, ms = 200 }")
  end)

  it("a policy returning nonsense gets a clear error", function()
    local r = eng:query("SELECT 1 /* sy: nonsense=1 */")
    assert.is_false(r.ok)
    assert.matches("policy%.lua: route%(%) returned a number", r.message)
    local g = eng:query("SELECT 1 /* sy: ghost=1 */")
    assert.is_false(g.ok)
    assert.matches("main.nowhere", g.message)
    works()
  end)

  it("a firewall rule refuses DELETE without WHERE with the policy's SQLSTATE", function()
    local r = eng:query("DELETE FROM t")
    assert.is_false(r.ok)
    assert.are.equal("42501", r.sqlstate)
    assert.matches("DELETE without WHERE", r.message)
    local ok = eng:query("DELETE FROM t WHERE x = 42")
    assert.is_true(ok.ok, ok.message)
    assert.are.equal("1", eng:query("SELECT count(*) FROM t /* sy: route=primary */").value)
    assert.is_true(eng:engine_stats().rejected >= 1)
    assert.is_true(eng:engine_stats().policy_errors >= 3)
  end)
end)

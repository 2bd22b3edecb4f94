-- The policy authors' tools in the switchyard binary: `check` and `route`
-- on good and bad configs, run as a user would run them.
require("support.sanitizer")
local BIN = os.getenv("SWITCHYARD_BIN") or ((os.getenv("SWITCHYARD_BUILD") or "build") .. "/switchyard")

local function run(args)
  local out = os.tmpname()
  local cmd = BIN .. " " .. args .. " >" .. out .. " 2>&1"
  local ok, _, code = os.execute(cmd)
  -- LuaJIT's os.execute returns the raw wait status
  if type(ok) == "number" then code = ok / 256 end
  local f = io.open(out)
  local text = f:read("*a")
  f:close()
  os.remove(out)
  return code, text
end

local function q(s) return "'" .. s:gsub("'", "'\\''") .. "'" end

local dir

local function write(name, text)
  local path = dir .. "/" .. name
  local f = assert(io.open(path, "w"))
  f:write(text)
  f:close()
  return path
end

local GOOD = [[
return {
  clusters = {
    main = { nodes = {
      { name = "primary", role = "primary", conninfo = "host=127.0.0.1 port=1" },
      { name = "replica1", role = "replica", conninfo = "host=127.0.0.1 port=2" },
      { name = "replica2", role = "replica", conninfo = "host=127.0.0.1 port=3" },
    } },
  },
  policy_options = { balancer = "round_robin" },
}
]]

describe("switchyard check", function()
  setup(function()
    dir = os.tmpname()
    os.remove(dir)
    os.execute("mkdir -p " .. dir)
  end)
  teardown(function() os.execute("rm -rf " .. dir) end)

  it("accepts a good config and summarises it", function()
    local code, out = run("check " .. write("good.lua", GOOD))
    assert.are.equal(0, code)
    assert.matches("ok %(1 cluster, 3 nodes, policy .*read_write_split%.lua%)", out)
  end)

  it("lists every problem of a bad config with its key path", function()
    local code, out = run("check " .. write("bad.lua", [[
return {
  clusters = { main = { nodes = {
    { name = "primary", role = "primary", conninfo = "host=x", weight = "heavy" },
    { name = "r1", role = "boss", conninfo = "host=y", colour = "red" },
  } } },
  pool = { max = 0 },
}
]]))
    assert.are.equal(1, code)
    assert.matches("clusters%.main%.nodes%[1%]%.weight", out)
    assert.matches("clusters%.main%.nodes%[2%]%.role", out)
    assert.matches("clusters%.main%.nodes%[2%]%.colour: unknown key", out)
    assert.matches("pool%.max", out)
  end)

  it("reports a syntax error with file and line", function()
    local code, out = run("check " .. write("syntax.lua", "return {\n  clusters = {\n  oops oops\n}\n"))
    assert.are.equal(1, code)
    assert.matches("syntax%.lua:3:", out)
  end)

  it("reports a missing config file", function()
    local code, out = run("check " .. dir .. "/nowhere.lua")
    assert.are.equal(1, code)
    assert.matches("nowhere%.lua", out)
  end)

  it("refuses a policy without route(), a broken policy and bad policy options", function()
    write("noroute.lua", "return { }\n")
    local c1 = write("c1.lua", GOOD:gsub("policy_options", "policy = \"noroute.lua\", policy_options"))
    local code, out = run("check " .. c1)
    assert.are.equal(1, code)
    assert.matches("route", out)

    write("broken.lua", "local p = {}\nfunction p.route(q)\n  return q..\nend\nreturn p\n")
    code, out = run("check " .. write("c2.lua", GOOD:gsub("policy_options", "policy = \"broken.lua\", policy_options")))
    assert.are.equal(1, code)
    assert.matches("broken%.lua:%d+:", out)

    code, out = run("check " .. write("c3.lua", GOOD:gsub("round_robin", "no_such_balancer")))
    assert.are.equal(1, code)
    assert.matches("no_such_balancer", out)
  end)

  it("prints usage for bad invocations", function()
    local code, out = run("")
    assert.are.equal(2, code)
    assert.matches("usage", out)
    code = run("frobnicate")
    assert.are.equal(2, code)
    code = run("--help")
    assert.are.equal(0, code)
  end)
end)

describe("switchyard route", function()
  local cfg

  setup(function()
    dir = os.tmpname()
    os.remove(dir)
    os.execute("mkdir -p " .. dir)
    cfg = write("good.lua", GOOD)
  end)
  teardown(function() os.execute("rm -rf " .. dir) end)

  it("sends a read to a replica and says why", function()
    local code, out = run("route " .. cfg .. " " .. q("SELECT * FROM t WHERE id = $1") .. " --param 7")
    assert.are.equal(0, code)
    assert.matches("statement: read", out)
    assert.matches("trace: read: 2 healthy replica%(s%) of cluster main; round_robin picked main%.replica%d", out)
    assert.matches("route: main%.replica%d %(replica%)", out)
  end)

  it("sends writes, locking reads and write functions to the primary", function()
    for _, sql in ipairs({
      "INSERT INTO t VALUES (1)",
      "SELECT * FROM t FOR UPDATE",
      "SELECT nextval('s')",
      "WITH x AS (DELETE FROM t RETURNING *) SELECT * FROM x",
    }) do
      local code, out = run("route " .. cfg .. " " .. q(sql))
      assert.are.equal(0, code, out)
      assert.matches("trace: %a+ statement: needs the primary of cluster main", out)
      assert.matches("route: main%.primary %(primary%)", out, 1, false)
    end
  end)

  it("honours hints and nodes marked down", function()
    local code, out = run("route " .. cfg .. " " .. q("/* sy: route=primary */ SELECT 1"))
    assert.are.equal(0, code)
    assert.matches("hint: route = primary", out)
    assert.matches("route: main%.primary", out)
    code, out = run("route " .. cfg .. " " .. q("SELECT 1") .. " --down main.replica1 --down main.replica2")
    assert.are.equal(0, code)
    assert.matches("route: main%.primary", out)
    code, out = run("route " .. cfg .. " " .. q("SELECT 1") .. " --down main.nope")
    assert.are.equal(1, code)
    assert.matches("no such node", out)
  end)

  it("shows a rejection with its SQLSTATE and session variables reach the policy", function()
    write("firewall.lua", [[
local p = {}
function p.route(q)
  if q.params[1] == "forbidden" then
    return nil, "parameter " .. q.params[1] .. " refused (" .. #q.params .. " params)", "42501"
  end
  if q.session.vars.tenant == "blocked" then
    return nil, "tenant " .. q.session.vars.tenant .. " is blocked for " .. tostring(q.session.user), "42501"
  end
  return q.topology.clusters.main.primary
end
return p
]])
    local c = write("fw.lua", GOOD:gsub("policy_options", "policy = \"firewall.lua\", policy_options"))
    local code, out = run("route " .. c .. " " .. q("SELECT 1") .. " --session tenant=blocked --session user=alice")
    assert.are.equal(1, code)
    assert.matches("rejected: ERROR 42501: tenant blocked is blocked for alice", out)
    code, out = run("route " .. c .. " " .. q("SELECT $1, $2") .. " --param forbidden --param x")
    assert.are.equal(1, code)
    assert.matches("parameter forbidden refused %(2 params%)", out)
    code, out = run("route " .. c .. " " .. q("SELECT 1") .. " --session tenant=ok")
    assert.are.equal(0, code)
    assert.matches("route: main%.primary", out)
  end)
end)

-- examples/embedded: the C program that embeds the engine builds warning-free
-- against the static library, its config passes `switchyard check`, and it
-- runs its whole script against a real primary and two streaming replicas.
-- What it wrote is then read back from the primary with psql, so the
-- program's own report is not the only witness.
local cluster = require("support.cluster")

local quote = cluster.quote

describe("examples/embedded", function()
  local root = cluster.repo_root()
  local build = cluster.build_dir()
  local bed, tmp, exe, env

  -- Runs a shell command from the repository root with the bed's ports.
  local function run(cmd)
    return cluster.run("cd " .. quote(root) .. " && " .. env .. " " .. cmd)
  end

  setup(function()
    tmp = cluster.check("mktemp -d"):gsub("%s+$", "")
    exe = tmp .. "/embedded_example"
    bed = cluster.start({ clusters = { { name = "main", replicas = 2 } } })
    local c = bed.clusters.main
    env = table.concat({
      "SY_PRIMARY_PORT=" .. c.primary.port,
      "SY_REPLICA1_PORT=" .. c.replicas[1].port,
      "SY_REPLICA2_PORT=" .. c.replicas[2].port,
      "SWITCHYARD_HOME=" .. quote(root),
    }, " ")
  end)

  teardown(function()
    if bed then bed:teardown() end
    if tmp then os.execute("rm -rf " .. quote(tmp)) end
  end)

  it("builds with -std=c11 -Wall -Wextra -Werror against libswitchyard.a", function()
    local san = os.getenv("SANITIZE") == "1" and " -fsanitize=address,undefined" or ""
    local code, out, err = cluster.run("cd " .. quote(root) .. " && cc -std=c11 -Wall -Wextra -Werror"
      .. san .. " -I core -I/usr/include/postgresql examples/embedded/main.c "
      .. quote(build .. "/libswitchyard.a") .. " -lluajit-5.1 -lpq -lev -lcurl -lm -lssl -lcrypto -o " .. quote(exe))
    assert.are.equal(0, code, err .. out)
    assert.are.equal("", err)
  end)

  it("passes `switchyard check` with the bed's ports", function()
    local code, out, err = run(quote(build .. "/switchyard") .. " check examples/embedded/config.lua")
    assert.are.equal(0, code, err .. out)
    assert.matches("ok %(1 cluster, 3 nodes, policy [^)]*examples/embedded/policy%.lua%)", out)
  end)

  it("has a policy whose decisions show in a dry run", function()
    local sy = quote(build .. "/switchyard")
    local code, out, err = run(sy .. " route examples/embedded/config.lua 'DELETE FROM orders'")
    assert.are.equal(1, code, out)
    assert.matches("ERROR 42501: firewall: DELETE without WHERE", err .. out, 1, true)

    code, out, err = run(sy .. " route examples/embedded/config.lua 'update orders set x = 1'")
    assert.are.equal(1, code, out)
    assert.matches("ERROR 42501: firewall: UPDATE without WHERE", err .. out, 1, true)

    code, out, err = run(sy .. " route examples/embedded/config.lua 'DELETE FROM orders WHERE id = 1'")
    assert.are.equal(0, code, err)
    assert.matches("route: main.primary", out, 1, true)

    code, out, err = run(sy .. " route examples/embedded/config.lua "
      .. quote("/* sy: tenant=acme */ SELECT * FROM orders"))
    assert.are.equal(0, code, err)
    assert.matches("route: main.replica2", out, 1, true)

    code, out, err = run(sy .. " route examples/embedded/config.lua 'SELECT 1' --session tenant=acme")
    assert.are.equal(0, code, err)
    assert.matches("route: main.replica2", out, 1, true)
  end)

  it("refuses a config whose tenant_replicas names no node", function()
    local bad = tmp .. "/bad_config.lua"
    local f = assert(io.open(bad, "w"))
    f:write(([[
return {
  clusters = { main = { nodes = {
    { name = "primary", role = "primary", conninfo = "host=127.0.0.1 port=5432" },
    { name = "replica1", role = "replica", conninfo = "host=127.0.0.1 port=5433" },
  } } },
  policy = %q,
  policy_options = { tenant_replicas = { acme = "main.replica9" } },
}
]]):format(root .. "/examples/embedded/policy.lua"))
    f:close()
    local code, out, err = run(quote(build .. "/switchyard") .. " check " .. quote(bad))
    assert.are.equal(1, code, out)
    assert.matches('tenant_replicas.acme: no node named "main.replica9"', err .. out, 1, true)
  end)

  it("runs its script against the bed and every expectation holds", function()
    local code, out, err = run("timeout 60 " .. quote(exe) .. " examples/embedded/config.lua")
    assert.are.equal(0, code, out .. err)
    assert.matches("\nok: all %d+ expectations held\n", out)
    assert.not_matches("FAIL", out)

    -- The program's line for one step (or, when it is missing, all of it).
    local function line(label)
      local esc = label:gsub("%p", "%%%0")
      return ("\n" .. out):match("\n(" .. esc .. " +%-> [^\n]*)") or ("no line " .. label .. " in:\n" .. out)
    end
    assert.matches("-> main%.primary +acme$", line("write"))
    assert.matches("-> main%.replica[12] +hello, embedded$", line("parameterised read"))
    assert.matches("-> main%.replica[12] +t$", line("next read (round robin)"))
    assert.matches("-> main%.replica2 +t$", line("tenant read (hint)"))
    assert.matches("-> main%.primary +99%.90$", line("tx: SELECT"))
    assert.matches("-> main%.primary +COMMIT$", line("tx: COMMIT"))
    assert.matches("-> refused +SQLSTATE 42501: firewall: DELETE without WHERE",
      line("unbounded delete"))
    -- The stats table lists every node.
    for _, n in ipairs({ "main.primary", "main.replica1", "main.replica2" }) do
      assert.matches("\n" .. n:gsub("%.", "%%.") .. " +%a+ +yes +%d+", out)
    end

    -- What the program wrote is really on the primary: the committed
    -- transaction's row, the bounded UPDATE applied, the DELETE refused.
    local p = bed.clusters.main.primary
    assert.are.equal("1", bed:psql(p, "SELECT count(*) FROM sy_example_orders WHERE tenant = 'globex'"))
    assert.are.equal("13.50", bed:psql(p, "SELECT total FROM sy_example_orders WHERE tenant = 'acme'"))
  end)
end)

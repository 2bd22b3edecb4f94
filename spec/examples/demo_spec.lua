-- `make demo` (examples/demo.lua): it runs to the end on a fresh machine
-- state, reports all three nodes with the split read_write_split promises,
-- and leaves no server behind.
local cluster = require("support.cluster")

local quote = cluster.quote

-- Under SANITIZE=1 the sanitized library (loaded through the FFI by the
-- support modules) needs its runtimes preloaded.
local function preload_env()
  local preload = os.getenv("SY_SANITIZER_PRELOAD")
  return preload and ("LD_PRELOAD=" .. quote(preload) .. " ") or ""
end

describe("examples/demo.lua", function()
  local root = cluster.repo_root()
  local code, out, err, seconds

  setup(function()
    local t0 = cluster.now()
    -- SWITCHYARD_BUILD (and SWITCHYARD_LIB, when set) pass through the
    -- environment, as `make demo` passes them.
    code, out, err = cluster.run("cd " .. quote(root) .. " && " .. preload_env()
      .. "timeout 120 luajit examples/demo.lua")
    seconds = cluster.now() - t0
  end)

  it("exits 0 in well under a minute", function()
    assert.are.equal(0, code, out .. err)
    assert.is_true(seconds < 60, ("took %.1f s"):format(seconds))
  end)

  it("names all three nodes with the ports that answered", function()
    for _, node in ipairs({ "main.primary", "main.replica1", "main.replica2" }) do
      assert.matches(node:gsub("%.", "%%.") .. " %(port %d+%)", out)
    end
  end)

  it("reports reads on both replicas and everything else on the primary", function()
    local function line(kind)
      return out:match("\n  " .. kind .. " +%d+ %-> ([^\n]*)") or ("no " .. kind .. " line in:\n" .. out)
    end
    local r1, r2 = line("read"):match("^main%.replica1 %(port %d+%) x(%d+), main%.replica2 %(port %d+%) x(%d+)")
    assert.is_truthy(r1, line("read"))
    -- Round robin: an even split (a retried read could move one).
    assert.are.equal(300, tonumber(r1) + tonumber(r2))
    assert.is_true(math.abs(tonumber(r1) - 150) <= 1, line("read"))
    for _, kind in ipairs({ "write", "transaction", "hinted read" }) do
      assert.matches("^main%.primary %(port %d+%)", line(kind))
      assert.not_matches("replica", line(kind))
    end
    assert.matches("saw all 60 of 60 rows", out, 1, true)
    assert.matches("\n  total +%d+ +100%.0%%", out)
  end)

  it("stops every server it started", function()
    local ports = {}
    for port in out:gmatch("%(port (%d+)%)") do ports[port] = true end
    assert.is_not_nil(next(ports), out)
    for port in pairs(ports) do
      -- pg_isready exits 2 when nothing answers on the port.
      local rc = cluster.run(quote(cluster.pg_bin("pg_isready")) .. " -q -h 127.0.0.1 -p " .. port)
      assert.are.equal(2, rc, "a server still answers on port " .. port)
    end
    assert.matches("cleaned up", out, 1, true)
  end)
end)

describe("examples/demo_proxy.lua", function()
  local root = cluster.repo_root()
  local code, out, err

  setup(function()
    code, out, err = cluster.run("cd " .. quote(root) .. " && " .. preload_env()
      .. "timeout 120 luajit examples/demo_proxy.lua")
  end)

  it("exits 0 and shows reads on replicas, writes and the transaction on the primary", function()
    assert.are.equal(0, code, out .. err)
    assert.matches("SELECT count%(%*%) FROM demo_items +%-> main%.replica%d", out)
    assert.matches("INSERT INTO demo_items .- %-> main%.primary", out)
    assert.matches("UPDATE demo_items .- %-> main%.primary", out)
    assert.matches("current_setting%('TimeZone'%) +%-> main%.replica%d +%= Asia/Tokyo", out)
    assert.matches("SHOW POOLS", out)
  end)
end)

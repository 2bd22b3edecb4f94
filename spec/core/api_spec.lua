-- The public C API's contract on bad input: NULL and out-of-range
-- arguments, missing files, bad configs, calls in the wrong state.  Each
-- gets a clear error code (and message where there is one); none crashes,
-- and a failed call never fires its callback.  No PostgreSQL is needed: the
-- nodes point at ports nobody listens on.
local sy = require("support.ffi")
local E = require("support.engine")
local ffi, lib = sy.ffi, sy.lib

local CONFIG = [[
return {
  clusters = { main = { nodes = {
    { name = "primary", role = "primary", conninfo = "host=127.0.0.1 port=1 connect_timeout=1" },
    { name = "replica1", role = "replica", conninfo = "host=127.0.0.1 port=2 connect_timeout=1" },
  } } },
  pool = { min = 0, max = 2, acquire_timeout = 0.5, reconnect_min = 0.05, reconnect_max = 0.2 },
  log_level = "error",
}
]]

local function tmpfile(text)
  local path = os.tmpname() .. ".lua"
  local f = assert(io.open(path, "w"))
  f:write(text)
  f:close()
  return path
end

describe("C API", function()
  local path

  setup(function() path = tmpfile(CONFIG) end)
  teardown(function() os.remove(path) end)

  it("names every error code", function()
    for code = 0, -12, -1 do
      local s = ffi.string(lib.sy_strerror(code))
      assert.is_true(#s > 0)
      assert.are_not.equal("unknown error", s)
    end
    assert.are.equal("unknown error", ffi.string(lib.sy_strerror(-999)))
    assert.are.equal("read", ffi.string(lib.sy_kind_name(1)))
  end)

  it("refuses NULL and missing arguments to sy_engine_new", function()
    local out = ffi.new("sy_engine *[1]")
    local err = ffi.new("char[512]")
    assert.are.equal(lib.SY_EINVAL, lib.sy_engine_new(nil, nil, nil, 0))
    assert.are.equal(lib.SY_EINVAL, lib.sy_engine_new(out, nil, err, 512))
    local o = ffi.new("sy_engine_options")
    assert.are.equal(lib.SY_EINVAL, lib.sy_engine_new(out, o, err, 512))
    assert.matches("config_path", ffi.string(err))
    assert.is_true(out[0] == nil)
  end)

  it("reports a missing config file and a bad config with where and what", function()
    local eng, err, rc = E.new("/nonexistent/switchyard.lua")
    assert.is_nil(eng)
    assert.are.equal(lib.SY_ECONFIG, rc)
    assert.matches("/nonexistent/switchyard%.lua", err)
    local bad = tmpfile("return { clusters = { main = { nodes = { { name = 'p', role = 'primary' } } } } }")
    eng, err, rc = E.new(bad)
    os.remove(bad)
    assert.is_nil(eng)
    assert.are.equal(lib.SY_ECONFIG, rc)
    assert.matches("clusters%.main%.nodes%[1%]%.conninfo", err)
  end)

  it("accepts NULL in every free function", function()
    lib.sy_engine_free(nil)
    lib.sy_session_free(nil)
    assert.are.equal(lib.SY_EINVAL, lib.sy_engine_start(nil))
    assert.are.equal(lib.SY_EINVAL, lib.sy_engine_reload(nil))
    assert.are.equal(lib.SY_EINVAL, lib.sy_engine_stop(nil, nil, nil))
    assert.are.equal("", ffi.string(lib.sy_engine_last_error(nil)))
    assert.is_true(lib.sy_reply_take_result(nil, 0) == nil)
  end)

  it("refuses bad query arguments without firing the callback", function()
    local eng = assert(E.new(path))
    local fired = 0
    local cb = ffi.cast("sy_query_cb", function() fired = fired + 1 end)
    local a = ffi.new("sy_query_args")
    assert.are.equal(lib.SY_EINVAL, lib.sy_query(nil, a, cb, nil))
    assert.are.equal(lib.SY_EINVAL, lib.sy_query(eng.e, nil, cb, nil))
    assert.are.equal(lib.SY_EINVAL, lib.sy_query(eng.e, a, cb, nil)) -- no sql
    a.sql = "SELECT 1"
    assert.are.equal(lib.SY_EINVAL, lib.sy_query(eng.e, a, nil, nil)) -- no callback
    a.nparams = -1
    assert.are.equal(lib.SY_EINVAL, lib.sy_query(eng.e, a, cb, nil))
    a.nparams = 2 -- but no values
    assert.are.equal(lib.SY_EINVAL, lib.sy_query(eng.e, a, cb, nil))
    a.nparams = 70000
    assert.are.equal(lib.SY_EINVAL, lib.sy_query(eng.e, a, cb, nil))
    a.nparams = 1
    local values = ffi.new("const char *[1]", { "\1\2" })
    local formats = ffi.new("int[1]", { 1 })
    a.param_values = values
    a.param_formats = formats -- binary without a length
    assert.are.equal(lib.SY_EINVAL, lib.sy_query(eng.e, a, cb, nil))
    a.nparams = 0
    a.result_format = 7
    assert.are.equal(lib.SY_EINVAL, lib.sy_query(eng.e, a, cb, nil))
    a.result_format = 0
    a.timeout = -1
    assert.are.equal(lib.SY_EINVAL, lib.sy_query(eng.e, a, cb, nil))
    a.timeout = 0
    local huge = string.rep(" ", 64 * 1024 * 1024 + 1)
    a.sql = huge
    assert.are.equal(lib.SY_ETOOBIG, lib.sy_query(eng.e, a, cb, nil))
    eng:run_for(0.05)
    assert.are.equal(0, fired)
    cb:free()
    eng:close()
  end)

  it("fails a query on an unreachable cluster through its callback, exactly once", function()
    local eng = assert(E.new(path))
    local calls = 0
    local reply
    local rc = eng:submit("SELECT 1", nil, function(r) calls = calls + 1; reply = r end)
    assert.are.equal(0, rc)
    assert.are.equal(0, calls) -- never inside sy_query()
    assert.is_true(eng:run_until(function() return reply ~= nil end, 10))
    eng:run_for(0.2)
    assert.are.equal(1, calls)
    assert.is_false(reply.ok)
    assert.are.equal("08006", reply.sqlstate)
    assert.matches("main%.", reply.message)
    assert.is_true(#eng:events_of("node_down") >= 1)
    eng:close()
  end)

  it("refuses calls in the wrong state", function()
    local eng = assert(E.new(path))
    assert.are.equal(lib.SY_ESTATE, lib.sy_engine_run(eng.e)) -- host loop
    local s = eng:session()
    local other = assert(E.new(path))
    local a = ffi.new("sy_query_args")
    a.sql = "SELECT 1"
    a.session = s
    local cb = ffi.cast("sy_query_cb", function() end)
    assert.are.equal(lib.SY_EINVAL, lib.sy_query(other.e, a, cb, nil)) -- foreign session
    -- a session with a query in flight is busy
    assert.are.equal(0, eng:submit("SELECT 1", nil, function() end, s))
    assert.are.equal(lib.SY_EBUSY, eng:submit("SELECT 2", nil, function() end, s))
    assert.are.equal(lib.SY_EINVAL, lib.sy_session_set(s, nil, "x"))
    assert.are.equal(0, lib.sy_session_set(s, "tenant", "a"))
    assert.are.equal(0, lib.sy_session_set(s, "tenant", nil))
    eng:run_until(function() return next(eng.pending) == nil end, 10)
    lib.sy_engine_stop(eng.e, nil, nil)
    assert.are.equal(lib.SY_ESTOPPED, eng:submit("SELECT 1", nil, function() end))
    cb:free()
    E.free_session(s)
    other:close()
    eng:close()
  end)

  it("reads stats and refuses out-of-range nodes", function()
    local eng = assert(E.new(path))
    assert.are.equal(2, lib.sy_node_count(eng.e))
    local st = ffi.new("sy_node_stats")
    assert.are.equal(lib.SY_ENOTFOUND, lib.sy_node_stats_get(eng.e, 2, st))
    assert.are.equal(lib.SY_ENOTFOUND, lib.sy_node_stats_get(eng.e, -1, st))
    assert.are.equal(lib.SY_EINVAL, lib.sy_node_stats_get(nil, 0, st))
    assert.are.equal(0, lib.sy_cluster_stats_get(eng.e, "main", st))
    assert.are.equal("main", ffi.string(st.name))
    assert.are.equal(lib.SY_ENOTFOUND, lib.sy_cluster_stats_get(eng.e, "nope", st))
    eng:close()
  end)

  it("dry-runs a route and checks a config without an engine", function()
    local out = ffi.new("char[4096]")
    assert.are.equal(0, lib.sy_config_check(path, nil, out, 4096))
    assert.are.equal(0, lib.sy_route_dry_run(path, nil, "INSERT INTO t VALUES (1)", nil, nil, nil, out, 4096))
    assert.matches("route: main%.primary", ffi.string(out))
    assert.are.equal(lib.SY_EINVAL, lib.sy_route_dry_run(path, nil, nil, nil, nil, nil, out, 4096))
    assert.are.equal(lib.SY_ECONFIG, lib.sy_config_check("/nonexistent.lua", nil, out, 4096))
  end)
end)

-- What the embedded API hands back: several result sets, binary parameters
-- and results, every error field, notices, timeouts, sessions that pin on
-- session state, and a graceful stop that lets in-flight queries finish.
local cluster = require("support.cluster")
local E = require("support.engine")
local sy = require("support.ffi")
local ffi, lib = sy.ffi, sy.lib

describe("queries through the embedded engine", function()
  local bed, eng

  setup(function()
    bed = cluster.start({ clusters = { { name = "main", replicas = 1 } } })
    bed:psql(bed.clusters.main.primary, "CREATE TABLE q_items (id int PRIMARY KEY, v text)")
    eng = assert(E.new(E.write_config(bed, { extra = "pool = { min = 1, max = 4 }," })))
  end)

  teardown(function()
    if eng then eng:close() end
    if bed then bed:teardown() end
  end)

  it("returns one result per statement of a multi-statement string", function()
    local r = eng:query("SELECT 1; SELECT 'two', 2; SELECT 3 WHERE false")
    assert.is_true(r.ok, r.message)
    assert.are.equal(3, #r.results)
    assert.are.same({ { "1" } }, r.results[1].rows)
    assert.are.same({ { "two", "2" } }, r.results[2].rows)
    assert.are.same({}, r.results[3].rows)
    -- a write anywhere sends the whole string to the primary
    local w = eng:query("SELECT 1; INSERT INTO q_items VALUES (1, 'a'); SELECT inet_server_port()")
    assert.is_true(w.ok, w.message)
    assert.are.equal(tostring(bed.clusters.main.primary.port), w.value)
  end)

  it("passes text and binary parameters and returns binary results", function()
    local a = ffi.new("sy_query_args")
    a.sql = "SELECT $1::int4 + 1, $2::text, $3::text IS NULL /* sy: route=primary */"
    a.nparams = 3
    local values = ffi.new("const char *[3]")
    local four = ffi.new("char[4]", { 0, 0, 0, 41 }) -- int4 41, network order
    values[0] = four
    values[1] = "hello"
    values[2] = nil
    local lengths = ffi.new("int[3]", { 4, 0, 0 })
    local formats = ffi.new("int[3]", { 1, 0, 0 })
    local types = ffi.new("unsigned int[3]", { 23, 25, 25 })
    a.param_values, a.param_lengths, a.param_formats, a.param_types = values, lengths, formats, types
    a.result_format = 1
    local got
    local cb = ffi.cast("sy_query_cb", function(_, reply)
      local res = reply.results[0]
      local v = sy.pq.PQgetvalue(res, 0, 0)
      got = {
        status = reply.status,
        int = (ffi.cast("unsigned char *", v)[3]),
        text = ffi.string(sy.pq.PQgetvalue(res, 0, 1)),
        isnull = ffi.cast("unsigned char *", sy.pq.PQgetvalue(res, 0, 2))[0],
      }
    end)
    assert.are.equal(0, lib.sy_query(eng.e, a, cb, nil))
    assert.is_true(eng:run_until(function() return got ~= nil end, 10))
    cb:free()
    assert.are.equal(0, got.status)
    assert.are.equal(42, got.int)
    assert.are.equal("hello", got.text)
    assert.are.equal(1, got.isnull)
  end)

  it("hands back PostgreSQL's error fields and notices", function()
    local r = eng:query("INSERT INTO q_items VALUES (1, 'dup')")
    assert.is_false(r.ok)
    assert.are.equal(0, r.status) -- PostgreSQL answered; the engine did not fail
    assert.are.equal("23505", r.sqlstate)
    assert.matches("duplicate key", r.message)
    assert.matches("already exists", r.detail)
    local n = eng:query("DO $$ BEGIN RAISE NOTICE 'first'; RAISE WARNING 'second'; END $$")
    assert.is_true(n.ok, n.message)
    assert.are.equal(2, #n.notices)
    assert.matches("NOTICE:  first", n.notices[1])
    assert.matches("WARNING:  second", n.notices[2])
  end)

  it("fails a query past its timeout with 57014 and keeps serving", function()
    local r = eng:query("SELECT pg_sleep(5)", nil, nil, { timeout = 0.3 })
    assert.is_false(r.ok)
    assert.are.equal("57014", r.sqlstate)
    assert.is_true(eng:query("SELECT 1").ok)
  end)

  it("pins a session that sets session state, and a plain query never sees it", function()
    local s = eng:session("app", "postgres", "query_spec")
    assert.is_true(eng:query("SET statement_timeout = '12345ms'", nil, s).ok)
    assert.is_true(E.ffi_session_pinned(s))
    for _ = 1, 5 do
      assert.are.equal("12345ms", eng:query("SHOW statement_timeout", nil, s).value)
    end
    assert.is_true(eng:query("CREATE TEMP TABLE scratch (x int)", nil, s).ok)
    assert.is_true(eng:query("INSERT INTO scratch VALUES (1)", nil, s).ok)
    assert.are.equal("1", eng:query("SELECT count(*) FROM scratch", nil, s).value)
    -- outside the session, the setting never leaks through the pool
    for _ = 1, 8 do
      assert.are_not.equal("12345ms", eng:query("SHOW statement_timeout /* sy: route=primary */").value)
    end
    -- a SET without a session runs, then its connection is not reused
    local stats = eng:node_stats()["main.primary"]
    assert.is_true(eng:query("SET work_mem = '77MB' /* sy: route=primary */").ok)
    for _ = 1, 8 do
      assert.are_not.equal("77MB", eng:query("SHOW work_mem /* sy: route=primary */").value)
    end
    assert.is_true(eng:node_stats()["main.primary"].queries > stats.queries)
    E.free_session(s)
  end)

  it("stops gracefully: queries in flight finish, new ones are refused", function()
    local e2 = assert(E.new(E.write_config(bed, {})))
    local replies = {}
    for i = 1, 4 do
      assert.are.equal(0, e2:submit("SELECT pg_sleep(0.3), " .. i, nil, function(r) replies[i] = r end))
    end
    local done = false
    local done_cb = ffi.cast("void (*)(void *)", function() done = true end)
    assert.are.equal(0, lib.sy_engine_stop(e2.e, done_cb, nil))
    assert.are.equal(lib.SY_ESTOPPED, e2:submit("SELECT 1", nil, function() end))
    assert.is_true(e2:run_until(function() return done end, 15))
    for i = 1, 4 do
      assert.is_true(replies[i] and replies[i].ok, replies[i] and replies[i].message)
    end
    e2:close()
    done_cb:free()
  end)
end)

-- Read/write split with round robin against a real primary and two
-- streaming replicas.  Which server answered is asked of PostgreSQL itself
-- (inet_server_port()), never taken from the engine's own report.
local cluster = require("support.cluster")
local E = require("support.engine")

describe("read/write split with round robin", function()
  local bed, eng, ports

  setup(function()
    bed = cluster.start({ clusters = { { name = "main", replicas = 2 } } })
    local c = bed.clusters.main
    ports = E.port_names(bed)
    local path = E.write_config(bed, { extra = [[
      policy_options = { balancer = "round_robin" },
      pool = { min = 2, max = 8 },
    ]] })
    eng = assert(E.new(path))
    bed:psql(c.primary, "CREATE TABLE items (id serial PRIMARY KEY, v text)")
    bed:wait_replicas_streaming("main")
  end)

  teardown(function()
    if eng then eng:close() end
    if bed then bed:teardown() end
  end)

  local function served_by(reply)
    assert.is_true(reply.ok, reply.message)
    return ports[reply.value]
  end

  it("spreads 1000 reads 500/500 over the replicas and none on the primary", function()
    local replies = eng:query_many(1000, 16, function() return "SELECT inet_server_port()" end)
    local count = { primary = 0, replica1 = 0, replica2 = 0 }
    for _, r in ipairs(replies) do
      local who = served_by(r)
      count[who] = count[who] + 1
    end
    assert.are.equal(0, count.primary)
    assert.is_true(math.abs(count.replica1 - 500) <= 1, "replica1 got " .. count.replica1)
    assert.is_true(math.abs(count.replica2 - 500) <= 1, "replica2 got " .. count.replica2)
  end)

  -- The classify cache keeps one verdict per shape of a plain read (the
  -- text with its literals masked, core/classify_cache.c): texts that
  -- share a shape with a cached read but differ where it matters must
  -- still be read for what they are.
  it("routes simple-protocol texts that differ only in literals by what each is", function()
    local cases = {
      { "SELECT inet_server_port() WHERE 1 = 1", "replica" },
      { "SELECT inet_server_port() WHERE 2 = 2", "replica" },
      { "SELECT inet_server_port() WHERE 'a' = 'a'", "replica" },
      { "SELECT inet_server_port() WHERE 'it''s' = 'it''s'", "replica" },
      { "SELECT inet_server_port() FROM items WHERE id = 1 OR true LIMIT 1 FOR UPDATE", "primary" },
      { "SELECT inet_server_port() FROM items WHERE id = 2 OR true LIMIT 1 FOR UPDATE", "primary" },
      { "SELECT inet_server_port(), nextval('items_id_seq') WHERE 1 = 1", "primary" },
      { "SELECT inet_server_port(), nextval('items_id_seq') WHERE 2 = 2", "primary" },
      { "SELECT inet_server_port() WHERE 3 = 3 /* sy: route=primary */", "primary" },
      { "SELECT inet_server_port() WHERE 4 = 4 /* sy: route=primary */", "primary" },
      { "SELECT inet_server_port() WHERE 5 = 5", "replica" },
      { "SELECT inet_server_port() WHERE E'x' = 'x' /* sy: route=primary */", "primary" },
      { "SELECT inet_server_port() WHERE $$x$$ = 'x'", "replica" },
    }
    bed:psql(bed.clusters.main.primary, "INSERT INTO items (v) VALUES ('shape')")
    bed:wait_replicas_streaming("main")
    for round = 1, 2 do
      for _, case in ipairs(cases) do
        local who = served_by(eng:query(case[1]))
        assert.are.equal(case[2], who == "primary" and "primary" or "replica",
          ("round %d: %s went to %s"):format(round, case[1], who))
      end
    end
    bed:psql(bed.clusters.main.primary, "DELETE FROM items")
  end)

  it("sends every write to the primary", function()
    local replies = eng:query_many(200, 8, function(i)
      return "INSERT INTO items (v) VALUES ($1) RETURNING inet_server_port()", { "w" .. i }
    end)
    for _, r in ipairs(replies) do
      assert.are.equal("primary", served_by(r))
      assert.are.equal("main.primary", r.node)
    end
    local count = eng:query("SELECT count(*) FROM items /* sy: route=primary */")
    assert.are.equal("200", count.value)
  end)

  it("runs every statement of BEGIN..COMMIT on one primary connection", function()
    local s = eng:session("app", "postgres", "routing_spec")
    local begin = eng:query("BEGIN", nil, s)
    assert.is_true(begin.ok, begin.message)
    local pids = {}
    for i = 1, 20 do
      local sql = (i % 2 == 0) and "SELECT pg_backend_pid(), inet_server_port()"
        or "INSERT INTO items (v) VALUES ('tx') RETURNING pg_backend_pid(), inet_server_port()"
      local r = eng:query(sql, nil, s)
      assert.is_true(r.ok, r.message)
      local row = r.results[1].rows[1]
      pids[row[1]] = true
      assert.are.equal("primary", ports[row[2]])
    end
    assert.is_true(E.ffi_session_pinned(s))
    assert.is_true(eng:query("COMMIT", nil, s).ok)
    assert.is_false(E.ffi_session_pinned(s))
    local n = 0
    for _ in pairs(pids) do n = n + 1 end
    assert.are.equal(1, n)
  end)

  it("rolls back an open transaction when its session is freed", function()
    local s = eng:session()
    assert.is_true(eng:query("BEGIN", nil, s).ok)
    assert.is_true(eng:query("INSERT INTO items (v) VALUES ('lost')", nil, s).ok)
    E.free_session(s)
    local r = eng:query("SELECT count(*) FROM items WHERE v = 'lost' /* sy: route=primary */")
    assert.are.equal("0", r.value)
  end)
end)

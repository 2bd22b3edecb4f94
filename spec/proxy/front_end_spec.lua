-- The proxy's front end with real clients: every kind of listener, values
-- larger than any buffer streaming both ways, NOTICEs and ParameterStatus in
-- order, ErrorResponse with all its fields, GSSENCRequest refused cleanly.
local cluster = require("support.cluster")
local proxy = require("support.proxy")

local quote = cluster.quote

describe("the proxy front end", function()
  local bed, px, c, port6

  setup(function()
    bed = cluster.start({ clusters = { { name = "main", replicas = 1 } } })
    c = bed.clusters.main
    bed:psql(c.primary, "CREATE TABLE big (id int PRIMARY KEY, v text); CREATE TABLE uniq (id int PRIMARY KEY)")
    bed:wait_replicas_streaming("main")
    local port = cluster.free_port()
    port6 = cluster.free_port()
    -- The socket directory must be reachable by psql, which runs as postgres.
    os.execute("chmod 755 " .. quote(bed.dir))
    px = proxy.start(bed, {
      port = port,
      listen = ("%q, %q"):format("127.0.0.1:" .. port, "[::1]:" .. port6),
      proxy = ("unix_socket_dir = %q, client_buffer = 16384"):format(bed.dir),
    })
  end)

  teardown(function()
    if px then px.stop() end
    if bed then bed:teardown() end
  end)

  local function psql_via(conninfo, sql)
    return bed:try_psql({ conninfo = conninfo }, sql)
  end

  it("serves clients on IPv4, IPv6 and the Unix socket", function()
    for _, ci in ipairs({
      px.conninfo(),
      ("host=::1 port=%d dbname=postgres user=postgres sslmode=disable"):format(port6),
      ("host=%s port=%d dbname=postgres user=postgres"):format(bed.dir, px.port),
    }) do
      local ok, out, err = psql_via(ci, "SELECT 'hello ' || 7")
      assert.is_true(ok, ci .. ": " .. tostring(err) .. px.log_text())
      assert.are.equal("hello 7", out)
    end
  end)

  it("streams a 30 MB value to the client and a 10 MB parameter to the server", function()
    local ok, out, err = px.psql("SELECT repeat('x', 30000000)")
    assert.is_true(ok, err)
    assert.are.equal(30000000, #out)
    assert.is_nil(out:find("[^x]"))
    ok, out, err = px.psql("INSERT INTO big VALUES (1, repeat('y', 20000000)) RETURNING length(v)")
    assert.is_true(ok, err)
    assert.are.equal("20000000", out)
    -- A 10 MB parameter in a Bind (under max_message) (node-postgres: extended protocol).
    local script = [[
const { Client } = require('pg');
const c = new Client({ host: '127.0.0.1', port: +process.argv[1], user: 'postgres', database: 'postgres' });
(async () => {
  await c.connect();
  const r = await c.query("SELECT length($1::text) AS n, $1::text = repeat('z', 10000000) AS same",
                          ['z'.repeat(10000000)]);
  console.log(r.rows[0].n + ' ' + r.rows[0].same);
  await c.end();
})().catch((e) => { console.log('error ' + e.message); process.exit(1); });
]]
    local code, nout = cluster.run(("NODE_PATH=%s timeout 60 node -e %s %d 2>&1")
      :format(quote(cluster.repo_root() .. "/spec/clients/node_modules"), quote(script), px.port))
    assert.are.equal(0, code, nout)
    assert.are.equal("10000000 true", nout:match("[^\n]+"))
  end)

  it("relays NOTICEs in order and ParameterStatus changes", function()
    local ok, out, err = px.psql([[
      DO $$ BEGIN RAISE NOTICE 'first'; RAISE NOTICE 'second'; RAISE WARNING 'third'; END $$;
      SET application_name = 'renamed';
      SHOW application_name;
    ]])
    assert.is_true(ok, err)
    local a, b, w = err:find("first", 1, true), err:find("second", 1, true), err:find("third", 1, true)
    assert.is_truthy(a and b and w, err)
    assert.is_true(a < b and b < w, err)
    assert.are.equal("renamed", out)
  end)

  it("relays ErrorResponse with every field (SQLSTATE, detail, constraint, position)", function()
    local ok, _, err = px.psql("\\set VERBOSITY verbose\nINSERT INTO uniq VALUES (1); INSERT INTO uniq VALUES (1);")
    assert.is_false(ok)
    assert.matches("ERROR:  23505: duplicate key value violates unique constraint \"uniq_pkey\"", err)
    assert.matches("DETAIL:  Key %(id%)=%(1%) already exists%.", err)
    assert.matches("SCHEMA NAME:  public", err)
    assert.matches("CONSTRAINT NAME:  uniq_pkey", err)
    assert.matches("LOCATION:  ", err)
    ok, _, err = px.psql("\\set VERBOSITY verbose\nSELECT nosuchcolumn FROM uniq;")
    assert.is_false(ok)
    assert.matches("42703", err)
    assert.matches("LINE 1: SELECT nosuchcolumn FROM uniq", err)
  end)

  it("examples/configs/proxy.lua passes `switchyard check` and serves psql", function()
    local root = cluster.repo_root()
    local example = root .. "/examples/configs/proxy.lua"
    local port = cluster.free_port()
    local env = ("SY_PRIMARY_PORT=%d SY_REPLICA1_PORT=%d SY_REPLICA2_PORT=%d SY_PROXY_LISTEN=127.0.0.1:%d ")
      :format(c.primary.port, c.replicas[1].port, c.replicas[1].port, port)
    local code, out = cluster.run(env .. quote(cluster.build_dir() .. "/switchyard") .. " check " .. quote(example))
    assert.are.equal(0, code, out)
    local started = bed:spawn(env .. quote(cluster.build_dir() .. "/switchyard") .. " -c " .. quote(example),
      bed.dir .. "/example_proxy.log")
    local conninfo = ("host=127.0.0.1 port=%d dbname=postgres user=postgres sslmode=disable"):format(port)
    local ok, got
    cluster.wait_for(function()
      ok, got = psql_via(conninfo, "SELECT 'example ' || pg_is_in_recovery()")
      return ok
    end, 15, "the example proxy")
    started.stop()
    assert.are.equal("example true", got)
  end)

  it("answers GSSENCRequest with N and carries on with the startup", function()
    local ok, out, err = psql_via(px.conninfo("gssencmode=prefer"), "SELECT 1")
    assert.is_true(ok, err)
    assert.are.equal("1", out)
    local code, raw = cluster.run(("printf '\\000\\000\\000\\010\\004\\322\\026\\060' | "
      .. "timeout 5 /usr/bin/python3 -c %s %d"):format(quote([[
import socket, sys
s = socket.create_connection(("127.0.0.1", int(sys.argv[1])))
s.sendall(sys.stdin.buffer.read())
print(s.recv(1))
]]), px.port))
    assert.are.equal(0, code, raw)
    assert.are.equal("b'N'", raw:match("b'.'"))
  end)
end)

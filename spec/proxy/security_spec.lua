-- Security of `switchyard -c` on one primary and one streaming replica
-- whose servers run with ssl = on (a self-signed certificate made here):
-- TLS to clients (require, prefer, disable), TLS to the backends (asked of
-- PostgreSQL through pg_stat_ssl), SCRAM-SHA-256 and md5 logins against a
-- PgBouncer userlist.txt holding real secrets from pg_authid, and the admin
-- console restricted to admin.users.
--
-- Clients are psql (libpq) for what a user sees and node-postgres for the
-- SQLSTATE of a refused login: libpq prints a connection-time error without
-- its SQLSTATE whatever VERBOSITY says.
local cluster = require("support.cluster")
local proxy = require("support.proxy")
local certs = require("support.certs")
local cjson = require("cjson")

local quote = cluster.quote

-- Passwords of the roles the spec makes.  The plain one has a double quote
-- (written "" in the auth file) and blanks.
local PW = {
  sy_scram = "scram-secret-1",
  sy_md5 = "md5-secret-2",
  sy_plain = 'plain "quoted" pw',
}

describe("proxy security", function()
  local bed, tls, c
  local started = {}

  setup(function()
    tls = certs.new()
    bed = cluster.start({ clusters = { {
      name = "main", replicas = 1,
      settings = { ssl = true, ssl_cert_file = tls.cert, ssl_key_file = tls.key },
    } } })
    c = bed.clusters.main
  end)

  teardown(function()
    for _, px in ipairs(started) do pcall(px.stop) end
    if bed then bed:teardown() end
    if tls then tls.remove() end
  end)

  local function conninfo(port, o)
    return ("host=%s port=%d dbname=%s user=%s sslmode=%s connect_timeout=5")
      :format(o.host or "127.0.0.1", port, o.db or "postgres", o.user or "postgres", o.sslmode or "disable")
  end

  -- psql through a proxy.  o: sql, host (default 127.0.0.1; a directory for
  -- the Unix socket), user, db, sslmode (more conninfo may follow it),
  -- password.  Never prompts; no password file.  Returns ok, stdout, stderr.
  local function psql(port, o)
    local env = "PGPASSFILE=" .. quote(bed.dir .. "/no-pgpass") .. " "
      .. (o.password and ("PGPASSWORD=" .. quote(o.password) .. " ") or "env -u PGPASSWORD ")
    local code, out, err = cluster.run("printf '%s\\n' " .. quote(o.sql or "SELECT 1") .. " | " .. env
      .. "timeout 20 " .. quote(cluster.pg_bin("psql")) .. " -XAtqw -v ON_ERROR_STOP=1 -v VERBOSITY=verbose -d "
      .. quote(conninfo(port, o)) .. " -f -")
    return code == 0, (out:gsub("\n+$", "")), err
  end

  -- node-postgres through a proxy, for SQLSTATEs of refused logins.
  -- o: sql, user, db, ssl (boolean), password.  Returns the decoded
  -- { ok, rows = { "a|b", ... } } or { ok = false, code, message }.
  local NODE_PROBE = [[
const pg = require('pg')
const e = process.env
const c = new pg.Client({ host: '127.0.0.1', port: Number(e.SY_PORT), user: e.SY_USER, database: e.SY_DB,
  password: e.SY_PASSWORD, ssl: e.SY_SSL === '1' ? { rejectUnauthorized: false } : false,
  connectionTimeoutMillis: 5000 })
c.on('error', () => {})
const out = {}
c.connect()
  .then(() => c.query(e.SY_SQL))
  .then(r => { out.ok = true; out.rows = r.rows.map(x => Object.values(x).join('|')) })
  .catch(err => { out.ok = false; out.code = err.code || null; out.message = String(err.message) })
  .finally(() => process.stdout.write(JSON.stringify(out) + '\n', () => process.exit(0)))
]]
  local function node(port, o)
    local env = {
      "NODE_PATH=" .. quote(cluster.repo_root() .. "/spec/clients/node_modules"),
      "PGPASSFILE=" .. quote(bed.dir .. "/no-pgpass"), "SY_PORT=" .. port, "SY_USER=" .. quote(o.user or "postgres"),
      "SY_DB=" .. quote(o.db or "postgres"), "SY_SSL=" .. (o.ssl and "1" or "0"),
      "SY_SQL=" .. quote(o.sql or "SELECT 1"),
    }
    if o.password then env[#env + 1] = "SY_PASSWORD=" .. quote(o.password) end
    local code, out, err = cluster.run("env -u PGPASSWORD " .. table.concat(env, " ")
      .. " timeout 20 node -e " .. quote(NODE_PROBE))
    local ok, r = pcall(cjson.decode, out:match("({.*})%s*$") or "")
    assert(ok and type(r) == "table", "node probe printed no JSON (exit " .. code .. "): " .. out .. err)
    return r
  end

  -- Raw protocol probes (python3, no driver): what libpq never shows.
  --   scram USER...  the server-first-message of a SCRAM exchange, twice per
  --                  user: { user = { { salt, iterations, nonce }, {...} } }
  --   inject         an SSLRequest with a StartupMessage behind it in the same
  --                  packet: { reply = "S"|"N", rest = hex of what followed, closed }
  local RAW_PROBE = [[
import json, os, socket, struct, sys
PORT = int(os.environ['SY_PORT'])
def recvn(s, n):
    b = b''
    while len(b) < n:
        x = s.recv(n - len(b))
        if not x:
            raise EOFError('closed after %d bytes' % len(b))
        b += x
    return b
def read_msg(s):
    h = recvn(s, 5)
    return h[:1], recvn(s, struct.unpack('!I', h[1:])[0] - 4)
def startup(user):
    body = struct.pack('!I', 196608) + b'user\0' + user.encode() + b'\0database\0postgres\0\0'
    return struct.pack('!I', len(body) + 4) + body
def scram_first(user):
    s = socket.create_connection(('127.0.0.1', PORT), 5)
    s.sendall(startup(user))
    t, b = read_msg(s)
    if t != b'R' or struct.unpack('!I', b[:4])[0] != 10:
        return {'error': 'expected AuthenticationSASL, got %r %r' % (t, b[:80])}
    cfm = b'n,,n=,r=spec-client-nonce'
    mech = b'SCRAM-SHA-256\0'
    s.sendall(b'p' + struct.pack('!I', 8 + len(mech) + len(cfm)) + mech + struct.pack('!I', len(cfm)) + cfm)
    t, b = read_msg(s)
    s.close()
    if t != b'R' or struct.unpack('!I', b[:4])[0] != 11:
        return {'error': 'expected AuthenticationSASLContinue, got %r %r' % (t, b[:80])}
    f = dict(kv.split('=', 1) for kv in b[4:].decode().split(','))
    return {'salt': f.get('s'), 'iterations': f.get('i'), 'nonce': f.get('r')}
def inject():
    s = socket.create_connection(('127.0.0.1', PORT), 5)
    s.settimeout(3)
    s.sendall(struct.pack('!II', 8, 80877103) + startup('postgres'))
    out = {'reply': s.recv(1).decode('latin-1'), 'rest': '', 'closed': False}
    try:
        while True:
            x = s.recv(4096)
            if not x:
                out['closed'] = True
                break
            out['rest'] += x.hex()
    except ConnectionResetError:
        out['closed'] = True
    except socket.timeout:
        pass
    return out
if sys.argv[1] == 'scram':
    print(json.dumps({u: [scram_first(u), scram_first(u)] for u in sys.argv[2:]}))
else:
    print(json.dumps(inject()))
]]
  local function raw(port, ...)
    local args = {}
    for i, a in ipairs({ ... }) do args[i] = quote(a) end
    local code, out, err = cluster.run("SY_PORT=" .. port .. " timeout 20 /usr/bin/python3 -c "
      .. quote(RAW_PROBE) .. " " .. table.concat(args, " "))
    local ok, r = pcall(cjson.decode, out:match("({.*})%s*$") or "")
    assert(ok and type(r) == "table", "raw probe printed no JSON (exit " .. code .. "): " .. out .. err)
    return r
  end

  -- psycopg2 over TLS: SELECT pg_sleep(20), cancelled (PQcancel, in clear
  -- text as libpq 15 sends it) after 0.5 s from another thread.
  local CANCEL_PROBE = [[
import json, os, threading, time
import psycopg2
conn = psycopg2.connect(os.environ['SY_DSN'])
out = {'ssl': conn.info.ssl_in_use}
def cancel():
    time.sleep(0.5)
    conn.cancel()
threading.Thread(target=cancel).start()
cur = conn.cursor()
t = time.time()
try:
    cur.execute('SELECT pg_sleep(20)')
    out['code'] = None
except psycopg2.Error as e:
    out['code'] = e.pgcode
out['secs'] = time.time() - t
conn.rollback()
cur.execute('SELECT 1')
out['after'] = cur.fetchone()[0]
print(json.dumps(out))
]]

  -- Starts a proxy (proxy = text inside proxy = { listen, ... }) and waits
  -- until probe(px) is true.  nodes_extra: appended to every node's conninfo.
  local function start(text, probe, nodes_extra)
    local saved = {}
    for i, n in ipairs(bed.nodes) do
      saved[i] = n.conninfo
      if nodes_extra then n.conninfo = n.conninfo .. " " .. nodes_extra end
    end
    local ok, px = pcall(proxy.start, bed, { proxy = text, no_wait = true, extra = "pool = { min = 1, max = 4 }," })
    for i, n in ipairs(bed.nodes) do n.conninfo = saved[i] end
    assert(ok, px)
    started[#started + 1] = px
    local last = ""
    local waited, werr = pcall(cluster.wait_for, function()
      if not cluster.pid_alive(px.pid) then error("switchyard -c exited:\n" .. px.log_text(), 0) end
      local good, out, err = probe(px)
      last = tostring(out) .. tostring(err)
      return good
    end, 15, "the proxy to answer")
    assert(waited, tostring(werr) .. " (proxy = { " .. text .. " }); last try: " .. last)
    return px
  end

  local function tls_section(mode, extra)
    return ("tls = { mode = %q, cert = %q, key = %q%s }"):format(mode, tls.cert, tls.key, extra or "")
  end

  -- Rows of an admin SHOW as arrays of fields.
  local function rows(out)
    local list = {}
    for line in out:gmatch("[^\n]+") do
      local f = {}
      for v in (line .. "|"):gmatch("([^|]*)|") do f[#f + 1] = v end
      list[#list + 1] = f
    end
    return list
  end

  -- The admin console's own row in SHOW CLIENTS (columns pid, user,
  -- database, address, state, tls, ...): the one client on database switchyard.
  local function own_admin_tls(out)
    local mine = {}
    for _, r in ipairs(rows(out)) do
      if r[3] == "switchyard" then mine[#mine + 1] = r end
    end
    assert.are.equal(1, #mine, out)
    return mine[1][6]
  end

  local function px_text(px)
    return "\nproxy log:\n" .. cluster.tail(px.log, 30)
  end

  -- Stops the proxies started so far (idempotent): a test's proxy goes with
  -- it, so the backend checks see only their own proxy's connections.
  local function stop_all()
    for _, px in ipairs(started) do px.stop() end
  end

  describe("TLS to clients", function()
    after_each(stop_all)

    it('mode "require": sslmode=require gets TLS, sslmode=disable is refused with 28000', function()
      local px = start(tls_section("require"), function(p)
        return psql(p.port, { sslmode = "require" })
      end)
      local ok, out, err = psql(px.port, { sslmode = "require", sql = "\\conninfo\nSELECT 41 + 1" })
      assert.is_true(ok, err .. px_text(px))
      assert.matches("SSL connection %(protocol: TLSv1%.[23]", out)
      assert.matches("\n42$", out)
      ok, out, err = psql(px.port, { sslmode = "require", db = "switchyard", sql = "SHOW CLIENTS" })
      assert.is_true(ok, err .. px_text(px))
      assert.matches("^TLSv1%.[23]$", own_admin_tls(out))

      ok, out, err = psql(px.port, { sslmode = "disable" })
      assert.is_false(ok, out)
      assert.matches("FATAL:  switchyard requires TLS", err, 1, true)
      local r = node(px.port, { ssl = false })
      assert.is_false(r.ok)
      assert.are.equal("28000", r.code, cjson.encode(r))
      assert.matches("TLS", r.message)
      -- The admin console is behind the same door.
      ok, out, err = psql(px.port, { sslmode = "disable", db = "switchyard", sql = "SHOW CLIENTS" })
      assert.is_false(ok, out)
      assert.matches("requires TLS", err)
      r = node(px.port, { ssl = true, sql = "SELECT 7 AS n" })
      assert.is_true(r.ok, cjson.encode(r))
      assert.are.same({ "7" }, r.rows)
      -- A CancelRequest comes in clear text (libpq 15) and still works.
      local code, pout, perr = cluster.run("SY_DSN=" .. quote(conninfo(px.port, { sslmode = "require" }))
        .. " timeout 30 /usr/bin/python3 -c " .. quote(CANCEL_PROBE))
      local decoded, cr = pcall(cjson.decode, pout:match("({.*})%s*$") or "")
      assert.is_true(decoded, "cancel probe (exit " .. code .. "): " .. pout .. perr .. px_text(px))
      assert.is_true(cr.ssl, pout)
      assert.are.equal("57014", cr.code, pout)
      assert.is_true(cr.secs < 5, pout)
      assert.are.equal(1, cr.after, pout)
    end)

    -- Fails while the proxy dies when it has more than one listener (see the
    -- report): add_listener() reallocs the array of running ev_io watchers.
    it('mode "require" is for TCP: the Unix socket takes clear text, TCP still demands TLS', function()
      local px = start(tls_section("require") .. ', unix_socket_dir = "."', function(p)
        return psql(p.port, { host = p.dir })
      end)
      -- Like PostgreSQL's hostssl, the requirement is for TCP only.
      local ok, out, err = psql(px.port, { host = px.dir, sql = "\\conninfo\nSELECT 'unix'" })
      assert.is_true(ok, err .. px_text(px))
      assert.matches('via socket in "' .. px.dir .. '"', out, 1, true)
      assert.matches("\nunix$", out)
      for i = 1, 5 do
        ok, out, err = psql(px.port, { sslmode = "require", sql = "SELECT " .. i })
        assert.is_true(ok, ("TCP login %d with TLS: %s(switchyard -c %s)%s"):format(i, err,
          cluster.pid_alive(px.pid) and "still runs" or "is gone", px_text(px)))
        assert.are.equal(tostring(i), out)
      end
      ok, out, err = psql(px.port, {})
      assert.is_false(ok, out)
      assert.matches("requires TLS", err, 1, true)
      ok, out = psql(px.port, { host = px.dir, sql = "SELECT 'unix again'" })
      assert.is_true(ok)
      assert.are.equal("unix again", out)
    end)

    it('mode "prefer": TLS and clear text both log in', function()
      local px = start(tls_section("prefer"), function(p) return psql(p.port, {}) end)
      local ok, out, err = psql(px.port, { sslmode = "require", sql = "\\conninfo\nSELECT 1" })
      assert.is_true(ok, err .. px_text(px))
      assert.matches("SSL connection %(protocol: TLSv1%.[23]", out)
      ok, out, err = psql(px.port, { sslmode = "prefer", sql = "\\conninfo" })
      assert.is_true(ok, err .. px_text(px))
      assert.matches("SSL connection", out)
      ok, out, err = psql(px.port, { sslmode = "disable", sql = "\\conninfo\nSELECT 2" })
      assert.is_true(ok, err .. px_text(px))
      assert.is_nil(out:find("SSL", 1, true), out)
      assert.matches("\n2$", out)
      ok, out, err = psql(px.port, { sslmode = "require", db = "switchyard", sql = "SHOW CLIENTS" })
      assert.is_true(ok, err)
      assert.matches("^TLSv1%.[23]$", own_admin_tls(out))
      ok, out, err = psql(px.port, { sslmode = "disable", db = "switchyard", sql = "SHOW CLIENTS" })
      assert.is_true(ok, err)
      assert.are.equal("no", own_admin_tls(out))
    end)

    it('mode "disable": an SSLRequest gets N and the login goes on in clear', function()
      local px = start('tls = { mode = "disable" }', function(p) return psql(p.port, {}) end)
      local ok, out, err = psql(px.port, { sslmode = "prefer", sql = "\\conninfo\nSELECT 3" })
      assert.is_true(ok, err .. px_text(px))
      assert.is_nil(out:find("SSL", 1, true), out)
      assert.matches("\n3$", out)
      ok, out, err = psql(px.port, { sslmode = "require" })
      assert.is_false(ok, out)
      assert.matches("server does not support SSL, but SSL was required", err, 1, true)
      local r = node(px.port, { ssl = true })
      assert.is_false(r.ok)
      assert.matches("does not support SSL", r.message)
      -- The proxy is still there for clear-text clients.
      ok, out = psql(px.port, { sslmode = "prefer", sql = "SELECT 4" })
      assert.is_true(ok)
      assert.are.equal("4", out)
    end)

    it("an SSLRequest with clear text behind it in the same packet: S, then the connection is closed", function()
      -- The StartupMessage was sent before the handshake, so anyone on the
      -- path could have written it (CVE-2021-23222): it must not be read.
      local px = start(tls_section("require"), function(p) return psql(p.port, { sslmode = "require" }) end)
      local r = raw(px.port, "inject")
      assert.are.equal("S", r.reply, cjson.encode(r))
      assert.are.equal("", r.rest, cjson.encode(r))
      assert.is_true(r.closed, cjson.encode(r))
      -- The proxy carries on.
      assert.is_true((psql(px.port, { sslmode = "require" })))
    end)

    it("tls.ca: a client certificate, when given, must be signed by it", function()
      local other = certs.new({ cn = "intruder" })
      finally(other.remove)
      local px = start(tls_section("prefer", (", ca = %q"):format(tls.cert)), function(p)
        return psql(p.port, { sslmode = "require" })
      end)
      local trusted, untrusted = ("sslcert=%s sslkey=%s"):format(tls.cert, tls.key),
        ("sslcert=%s sslkey=%s"):format(other.cert, other.key)
      local good, out, err = psql(px.port, { sslmode = "require " .. trusted, sql = "SELECT 'cert ok'" })
      assert.is_true(good, err .. px_text(px))
      assert.are.equal("cert ok", out)
      good, out, err = psql(px.port, { sslmode = "require " .. untrusted, sql = "SELECT 'cert ok'" })
      assert.is_false(good, out)
      assert.matches("SSL error", err, 1, true)
      -- No certificate at all is the client's business, as with PostgreSQL's
      -- ssl_ca_file (only pg_hba clientcert would demand one).
      good, out, err = psql(px.port, { sslmode = "require", sql = "SELECT 'no cert'" })
      assert.is_true(good, err)
      assert.are.equal("no cert", out)
    end)
  end)

  describe("TLS to the backends", function()
    after_each(stop_all)
    local SSL_Q = "SELECT s.ssl, s.version, pg_is_in_recovery() FROM pg_stat_ssl s WHERE s.pid = pg_backend_pid()"

    it("node conninfo with sslmode=require: the servers see the proxy's connections as SSL", function()
      local px = start("", function(p) return psql(p.port, {}) end, "sslmode=require")
      -- A read runs on the replica, a hinted read and a write on the primary.
      local ok, out, err = psql(px.port, { sql = SSL_Q })
      assert.is_true(ok, err .. px_text(px))
      assert.matches("^t|TLSv1%.[23]|t$", out)
      ok, out, err = psql(px.port, { sql = SSL_Q .. " /* sy: route=primary */" })
      assert.is_true(ok, err .. px_text(px))
      assert.matches("^t|TLSv1%.[23]|f$", out)
      ok, out, err = psql(px.port, { sql = "CREATE TABLE sy_tls_probe (ssl bool, primary_side bool);\n"
        .. "INSERT INTO sy_tls_probe SELECT ssl, NOT pg_is_in_recovery() FROM pg_stat_ssl "
        .. "WHERE pid = pg_backend_pid() RETURNING ssl, primary_side;\nDROP TABLE sy_tls_probe;" })
      assert.is_true(ok, err .. px_text(px))
      assert.are.equal("t|t", out)
      -- The proxy's other connections too (health poll, pool): every TCP
      -- client of the primary but this check's own (the proxies of the
      -- tests before were stopped).
      ok, out = bed:try_psql(c.primary, "SELECT count(*) > 0, bool_and(s.ssl) FROM pg_stat_activity a "
        .. "JOIN pg_stat_ssl s USING (pid) WHERE a.backend_type = 'client backend' "
        .. "AND a.client_addr IS NOT NULL AND a.pid <> pg_backend_pid()")
      assert.is_true(ok, out)
      assert.are.equal("t|t", out)
    end)

    it("node conninfo with sslmode=disable: the same servers see clear text (the probe tells them apart)", function()
      local px = start("", function(p) return psql(p.port, {}) end, "sslmode=disable")
      local ok, out, err = psql(px.port, { sql = SSL_Q })
      assert.is_true(ok, err .. px_text(px))
      assert.are.equal("f||t", out)
      ok, out, err = psql(px.port, { sql = SSL_Q .. " /* sy: route=primary */" })
      assert.is_true(ok, err)
      assert.are.equal("f||f", out)
    end)
  end)

  describe("password logins against the auth file", function()
    local userlist, secrets, px_scram, px_md5

    local function failed_msg(user)
      return 'FATAL:  password authentication failed for user "' .. user .. '"'
    end

    -- psql's complaint with the user name and port taken out, to compare
    -- the refusals of different users.
    local function normalised(err, user)
      return (err:gsub('"' .. user .. '"', '"<user>"'):gsub("port %d+", "port <port>"))
    end

    setup(function()
      local out = bed:psql(c.primary, table.concat({
        "SET password_encryption = 'scram-sha-256';",
        "CREATE ROLE sy_scram LOGIN PASSWORD '" .. PW.sy_scram .. "';",
        "SET password_encryption = 'md5';",
        "CREATE ROLE sy_md5 LOGIN PASSWORD '" .. PW.sy_md5 .. "';",
        "SELECT rolname, rolpassword FROM pg_authid WHERE rolname IN ('sy_scram', 'sy_md5') ORDER BY 1;",
      }, "\n"))
      secrets = {}
      for name, secret in out:gmatch("([%w_]+)|([^\n]+)") do secrets[name] = secret end
      assert.matches("^md5%x+$", secrets.sy_md5)
      assert.matches("^SCRAM%-SHA%-256%$4096:", secrets.sy_scram)
      local dir = bed.dir .. "/auth"
      os.execute("mkdir -p " .. quote(dir))
      userlist = dir .. "/userlist.txt"
      local f = assert(io.open(userlist, "w"))
      f:write('; switchyard security spec\n')
      f:write(('"sy_scram" "%s"\n'):format(secrets.sy_scram))
      f:write(('"sy_md5" "%s"\n'):format(secrets.sy_md5))
      f:write(('"sy_plain" "%s"   ; a password in clear\n'):format(PW.sy_plain:gsub('"', '""')))
      f:close()
      px_scram = start(('auth = { type = "scram-sha-256", file = %q }, admin = { users = { "sy_scram" } }, %s')
        :format(userlist, tls_section("prefer")), function(p)
          return psql(p.port, { user = "sy_scram", password = PW.sy_scram, db = "switchyard", sql = "SHOW HELP" })
        end)
      px_md5 = start(('auth = { type = "md5", file = %q }'):format(userlist), function(p)
        return psql(p.port, { user = "sy_md5", password = PW.sy_md5 })
      end)
    end)

    it("scram-sha-256: a SCRAM secret and a plain password log in with the right password", function()
      for _, user in ipairs({ "sy_scram", "sy_plain" }) do
        local ok, out, err = psql(px_scram.port, { user = user, password = PW[user], sql = "SELECT 'in as ' || 5" })
        assert.is_true(ok, user .. ": " .. err .. px_text(px_scram))
        assert.are.equal("in as 5", out)
        local r = node(px_scram.port, { user = user, password = PW[user], sql = "SELECT 6 AS n" })
        assert.is_true(r.ok, user .. ": " .. cjson.encode(r))
        assert.are.same({ "6" }, r.rows)
      end
      -- The backends are reached as the node conninfo's user.
      local ok, out = psql(px_scram.port, { user = "sy_scram", password = PW.sy_scram, sql = "SELECT current_user" })
      assert.is_true(ok)
      assert.are.equal("postgres", out)
    end)

    it("scram-sha-256: wrong password, unknown user and an md5 secret all fail alike with 28P01", function()
      local ok, out, err = psql(px_scram.port, { user = "sy_scram", password = "wrong" })
      assert.is_false(ok, out)
      assert.matches(failed_msg("sy_scram"), err, 1, true)
      local reference = normalised(err, "sy_scram")
      local cases = {
        { user = "sy_plain", password = "wrong" },
        { user = "sy_nobody", password = PW.sy_scram },
        { user = "sy_md5", password = PW.sy_md5 }, -- an md5 secret cannot serve SCRAM
      }
      for _, case in ipairs(cases) do
        ok, out, err = psql(px_scram.port, case)
        assert.is_false(ok, case.user .. ": " .. out)
        assert.are.equal(reference, normalised(err, case.user))
      end
      table.insert(cases, 1, { user = "sy_scram", password = "wrong" })
      for _, case in ipairs(cases) do
        local r = node(px_scram.port, case)
        assert.is_false(r.ok, case.user)
        assert.are.equal("28P01", r.code, case.user .. ": " .. cjson.encode(r))
        assert.are.equal('password authentication failed for user "' .. case.user .. '"', r.message)
      end
      -- No password at all: psql gives up before the proxy decides.
      ok, out, err = psql(px_scram.port, { user = "sy_scram" })
      assert.is_false(ok, out)
      assert.matches("no password supplied", err, 1, true)
    end)

    it("scram-sha-256 over TLS: libpq's gs2 flag y is accepted, channel binding is not offered", function()
      for _, user in ipairs({ "sy_scram", "sy_plain" }) do
        local ok, out, err = psql(px_scram.port, { user = user, password = PW[user], sslmode = "require",
          sql = "\\conninfo\nSELECT 'tls+scram'" })
        assert.is_true(ok, user .. ": " .. err .. px_text(px_scram))
        assert.matches("SSL connection", out)
        assert.matches("\ntls%+scram$", out)
        local r = node(px_scram.port, { user = user, password = PW[user], ssl = true, sql = "SELECT 10 AS n" })
        assert.is_true(r.ok, user .. ": " .. cjson.encode(r))
      end
      local ok, out, err = psql(px_scram.port, { user = "sy_scram", password = "wrong", sslmode = "require" })
      assert.is_false(ok, out)
      assert.matches('FATAL:  password authentication failed for user "sy_scram"', err, 1, true)
      -- Only SCRAM-SHA-256 is offered, so a client that insists on channel
      -- binding stops on its own side.
      ok, out, err = psql(px_scram.port, { user = "sy_scram", password = PW.sy_scram,
        sslmode = "require channel_binding=require" })
      assert.is_false(ok, out)
      assert.matches("channel binding", err, 1, true)
    end)

    it("scram-sha-256: an unknown user's exchange looks like a real one (stable salt, same iterations)", function()
      local real_salt = secrets.sy_scram:match("^SCRAM%-SHA%-256%$4096:([^$]+)%$")
      local r = raw(px_scram.port, "scram", "sy_scram", "sy_nobody", "sy_nobody2", "sy_md5", "sy_plain")
      local text = cjson.encode(r)
      for user, tries in pairs(r) do
        for _, t in ipairs(tries) do
          assert.is_nil(t.error, user .. ": " .. text)
          assert.are.equal("4096", t.iterations, user .. ": " .. text)
          assert.are.equal(#real_salt, #t.salt, user .. ": " .. text)
          assert.are.equal("spec-client-nonce", t.nonce:sub(1, 17), user .. ": " .. text)
          assert.is_true(#t.nonce > 17, user .. ": " .. text)
        end
        assert.are.equal(tries[1].salt, tries[2].salt, user .. ": the salt changes between logins: " .. text)
        assert.are_not.equal(tries[1].nonce, tries[2].nonce, user .. ": " .. text)
      end
      assert.are.equal(real_salt, r.sy_scram[1].salt)
      assert.are_not.equal(r.sy_nobody[1].salt, r.sy_nobody2[1].salt)
      assert.are_not.equal(real_salt, r.sy_nobody[1].salt)
    end)

    it("md5: an md5 secret and a plain password log in with the right password", function()
      for _, user in ipairs({ "sy_md5", "sy_plain" }) do
        local ok, out, err = psql(px_md5.port, { user = user, password = PW[user], sql = "SELECT 'md5 ok'" })
        assert.is_true(ok, user .. ": " .. err .. px_text(px_md5))
        assert.are.equal("md5 ok", out)
        local r = node(px_md5.port, { user = user, password = PW[user], sql = "SELECT 8 AS n" })
        assert.is_true(r.ok, user .. ": " .. cjson.encode(r))
      end
    end)

    it("md5: wrong password, unknown user and a SCRAM secret all fail alike with 28P01", function()
      local ok, out, err = psql(px_md5.port, { user = "sy_md5", password = "wrong" })
      assert.is_false(ok, out)
      assert.matches(failed_msg("sy_md5"), err, 1, true)
      local reference = normalised(err, "sy_md5")
      local cases = {
        { user = "sy_md5", password = "wrong" },
        { user = "sy_plain", password = "wrong" },
        { user = "sy_nobody", password = PW.sy_md5 },
        { user = "sy_scram", password = PW.sy_scram }, -- md5 cannot check a SCRAM secret
      }
      for i, case in ipairs(cases) do
        if i > 1 then
          ok, out, err = psql(px_md5.port, case)
          assert.is_false(ok, case.user .. ": " .. out)
          assert.are.equal(reference, normalised(err, case.user))
        end
        local r = node(px_md5.port, case)
        assert.is_false(r.ok, case.user)
        assert.are.equal("28P01", r.code, case.user .. ": " .. cjson.encode(r))
        assert.are.equal('password authentication failed for user "' .. case.user .. '"', r.message)
      end
    end)

    it("auth.query: secrets looked up on the server (pg_authid), for SCRAM and md5 alike", function()
      local query = "SELECT rolname, rolpassword FROM pg_authid WHERE rolname = $1 AND rolcanlogin"
      for _, case in ipairs({ { "scram-sha-256", "sy_scram" }, { "md5", "sy_md5" } }) do
        local px = start(('auth = { type = %q, query = %q }'):format(case[1], query), function(p)
          return psql(p.port, { user = case[2], password = PW[case[2]] })
        end)
        local ok, out, err = psql(px.port, { user = case[2], password = PW[case[2]], sql = "SELECT 'looked up'" })
        assert.is_true(ok, err .. px_text(px))
        assert.are.equal("looked up", out)
        local r = node(px.port, { user = case[2], password = "wrong" })
        assert.are.equal("28P01", r.code, cjson.encode(r))
        r = node(px.port, { user = "sy_nobody", password = "wrong" })
        assert.are.equal("28P01", r.code, cjson.encode(r))
        assert.are.equal('password authentication failed for user "sy_nobody"', r.message)
        px.stop()
      end
    end)

    it("the admin console checks the password, then admin.users", function()
      local ok, out, err = psql(px_scram.port, { user = "sy_scram", password = PW.sy_scram, db = "switchyard",
        sql = "SHOW STATS" })
      assert.is_true(ok, err)
      assert.matches("logins_failed|%d+", out)
      ok, out, err = psql(px_scram.port, { user = "sy_scram", password = "wrong", db = "switchyard" })
      assert.is_false(ok, out)
      assert.matches(failed_msg("sy_scram"), err, 1, true)
      local r = node(px_scram.port, { user = "sy_plain", password = PW.sy_plain, db = "switchyard",
        sql = "SHOW STATS" })
      assert.is_false(r.ok)
      assert.are.equal("28000", r.code, cjson.encode(r))
      assert.are.equal('user "sy_plain" may not use the admin console', r.message)
    end)
  end)

  describe("the admin console", function()
    it("serves the users of admin.users and refuses others with 28000", function()
      local px = start('admin = { users = { "sy_admin" } }', function(p)
        return psql(p.port, { user = "sy_admin", db = "switchyard", sql = "SHOW HELP" })
      end)
      local ok, out, err = psql(px.port, { user = "sy_admin", db = "switchyard", sql = "SHOW STATS" })
      assert.is_true(ok, err .. px_text(px))
      assert.matches("clients_total|%d+", out)
      ok, out, err = psql(px.port, { user = "postgres", db = "switchyard", sql = "SHOW STATS" })
      assert.is_false(ok, out)
      assert.matches('FATAL:  user "postgres" may not use the admin console', err, 1, true)
      local r = node(px.port, { user = "postgres", db = "switchyard", sql = "SHOW STATS" })
      assert.is_false(r.ok)
      assert.are.equal("28000", r.code, cjson.encode(r))
      for _, cmd in ipairs({ "SHOW CLIENTS", "RELOAD" }) do
        r = node(px.port, { user = "sy_other", db = "switchyard", sql = cmd })
        assert.are.equal("28000", r.code, cmd .. ": " .. cjson.encode(r))
      end
      -- Other users still reach the databases.
      ok, out, err = psql(px.port, { user = "postgres", sql = "SELECT 9" })
      assert.is_true(ok, err)
      assert.are.equal("9", out)
    end)
  end)
end)

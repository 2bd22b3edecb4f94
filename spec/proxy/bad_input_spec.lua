-- Bad input through `switchyard -c` on a primary and one replica: broken
-- startup packets, a stalled login, protocol violations before and after
-- authentication, oversized and malformed messages, FunctionCall, random
-- bytes, stray CancelRequests and clients that hang up while they wait for
-- a backend.  Each must end in an ErrorResponse or a disconnect, never a
-- crash or a hang, and a pgbench load running through the main proxy the
-- whole time must see no failed transaction.  The bytes travel through
-- spec/clients/raw_wire.py, which reports what came back.
local cluster = require("support.cluster")
local proxy = require("support.proxy")
local cjson = require("cjson")

local quote = cluster.quote

-- The load: back-to-back pgbench runs (4 clients, select-only) through the
-- main proxy from the end of setup until the last case is done.
local LOAD_RUN_SECONDS = 3
local LOAD_SCRIPT = [[
n=0
while [ ! -e "$SY_LOAD_STOP" ]; do
  n=$((n + 1))
  echo "SY-LOAD-RUN $n"
  pgbench -n -S -c 4 -j 2 -T "$SY_LOAD_SECONDS" 2>&1
  echo "SY-LOAD-EXIT $?"
done
echo "SY-LOAD-DONE $n"
]]
local WIRE = "/usr/bin/python3 spec/clients/raw_wire.py "

---------------------------------------------------------------------------
-- Bytes
---------------------------------------------------------------------------

local function hex(s)
  return (s:gsub(".", function(ch) return ("%02x"):format(ch:byte()) end))
end

local function be16(n)
  n = n % 65536
  return string.char(math.floor(n / 256), n % 256)
end

local function be32(n)
  n = n % 4294967296
  return string.char(math.floor(n / 16777216) % 256, math.floor(n / 65536) % 256,
    math.floor(n / 256) % 256, n % 256)
end

local PROTOCOL_3 = be32(196608)

-- raw_wire.py steps
local LOGIN = { login = { user = "postgres", database = "postgres" } }
local SYNC = { msg = "S" }
local function Q(sql) return { msg = "Q", text = sql } end
local function msg(t, body, length) return { msg = t, body_hex = hex(body or ""), length = length } end
local function read_until(types, timeout) return { read = { ["until"] = types, timeout = timeout or 5 } } end
local function read_close(timeout) return { read = { ["until"] = "close", timeout = timeout or 5 } } end

-- Parse of the unnamed statement "SELECT 1", then a Bind that breaks.
local PARSE_SELECT_1 = msg("P", "\0SELECT 1\0" .. be16(0))
local BAD_BINDS = {
  -- five parameters announced, none sent
  params_overrun = "\0\0" .. be16(0) .. be16(5),
  -- a value length of 1000 with two bytes behind it
  value_overrun = "\0\0" .. be16(0) .. be16(1) .. be32(1000) .. "ab" .. be16(0),
  -- three format codes for two parameters
  format_count = "\0\0" .. be16(3) .. be16(0) .. be16(0) .. be16(0) .. be16(2)
    .. be32(-1) .. be32(-1) .. be16(0),
  -- a value length of -5 (only -1, NULL, is negative)
  negative_length = "\0\0" .. be16(0) .. be16(1) .. be32(-5) .. be16(0),
  -- a portal name without its terminator
  unterminated = "abc",
}

---------------------------------------------------------------------------
-- Results
---------------------------------------------------------------------------

-- A result as text for failure messages, without the bulky hex.
local function show(r)
  local copy = {}
  for k, v in pairs(r) do
    if k ~= "received_hex" and k ~= "steps" and k ~= "messages" then copy[k] = v end
  end
  if type(copy.sent_hex) == "string" and #copy.sent_hex > 400 then
    copy.sent_hex = copy.sent_hex:sub(1, 400) .. "..."
  end
  local types = {}
  for _, m in ipairs(r.messages or {}) do types[#types + 1] = m.type .. (m.status or "") end
  copy.message_types = table.concat(types, " ")
  return cjson.encode(copy)
end

-- The ReadyForQuery statuses a connection received, in order.
local function statuses(r)
  local s = {}
  for _, m in ipairs(r.messages) do
    if m.type == "Z" then s[#s + 1] = m.status end
  end
  return s
end

local function assert_error(r, severity, sqlstates, what)
  local e = r.errors[1]
  assert.is_truthy(e, (what or r.name) .. ": no ErrorResponse: " .. show(r))
  if type(sqlstates) == "string" then sqlstates = { sqlstates } end
  local ok = false
  for _, s in ipairs(sqlstates) do ok = ok or e.C == s end
  assert.is_true(ok, (what or r.name) .. ": SQLSTATE " .. tostring(e.C) .. ", expected "
    .. table.concat(sqlstates, " or ") .. ": " .. show(r))
  assert.are.equal(severity, e.S, (what or r.name) .. ": " .. show(r))
end

-- FATAL with one of the SQLSTATEs, and the server closed the connection.
local function assert_fatal_close(r, sqlstates, what)
  assert_error(r, "FATAL", sqlstates, what)
  assert.is_true(r.closed, (what or r.name) .. ": still open after FATAL: " .. show(r))
end

describe("bad input through the proxy", function()
  local bed, c, load, load_out, load_stop
  -- name -> { px = handle, opts = proxy.start options }
  local proxies = {}
  local crashes = {}
  local wire_seq = 0

  local function px_of(name) return proxies[name].px end

  -- opts.conninfo_extra: what a login needs (a password); the proxy is
  -- then waited for with it instead of proxy.start's own check.
  local function launch(opts)
    if not opts.conninfo_extra then return proxy.start(bed, opts) end
    opts.no_wait = true
    local px = proxy.start(bed, opts)
    local ok, err = pcall(cluster.wait_for, function()
      if not cluster.pid_alive(px.pid) then error("switchyard -c exited:\n" .. px.log_text(), 0) end
      return (px.psql("SELECT 1", { conninfo = px.conninfo(opts.conninfo_extra) }))
    end, 15, "the proxy to answer")
    if not ok then
      px.stop()
      error(err, 0)
    end
    return px
  end

  local function start_proxy(name, opts)
    proxies[name] = { opts = opts, px = launch(opts) }
    opts.port = proxies[name].px.port
    return proxies[name].px
  end

  local function log_tail(px)
    local text = px.log_text()
    return #text > 8000 and ("..." .. text:sub(-8000)) or text
  end

  local function assert_alive(name)
    local px = px_of(name)
    assert.is_true(cluster.pid_alive(px.pid), "proxy " .. name .. " (pid " .. px.pid
      .. ") is gone; its log:\n" .. log_tail(px))
  end

  -- Runs raw_wire.py; returns its results by connection name.  Every
  -- connection must have connected unless may_refuse.
  local function wire(port, conns, parallel, may_refuse)
    wire_seq = wire_seq + 1
    local path = ("%s/wire_%d.json"):format(bed.dir, wire_seq)
    local f = assert(io.open(path, "w"))
    f:write(cjson.encode({ port = port, parallel = parallel or #conns, connections = conns }))
    f:close()
    local code, out, err = cluster.run(WIRE .. quote(path))
    local ok, res = pcall(cjson.decode, out)
    assert(ok and type(res) == "table" and res.results,
      ("raw_wire.py failed (exit %d): %s%s"):format(code, err, out))
    local by = {}
    for _, r in ipairs(res.results) do
      assert(r.connected or may_refuse, r.name .. ": could not connect: " .. tostring(r.connect_error))
      by[r.name] = r
    end
    return by, res
  end

  local function pool_row(name, node)
    local ok, out = px_of(name).admin("SHOW POOLS")
    assert.is_true(ok, out)
    for line in out:gmatch("[^\n]+") do
      local f = {}
      for v in (line .. "|"):gmatch("([^|]*)|") do f[#f + 1] = v end
      if f[1] == node then
        return { total = tonumber(f[3]), idle = tonumber(f[4]), busy = tonumber(f[5]),
                 waiting = tonumber(f[7]), line = line }
      end
    end
    error("no pool row for " .. node .. " in:\n" .. out)
  end

  setup(function()
    bed = cluster.start({ clusters = { { name = "main", replicas = 1 } } })
    c = bed.clusters.main
    bed:wait_replicas_streaming("main")
    bed:psql(c.primary, "CREATE TABLE bad_input_tx (id int)")
    cluster.check(("pgbench -i -s 1 -q -h 127.0.0.1 -p %d -U postgres postgres 2>&1"):format(c.primary.port),
      "pgbench -i")
    bed:wait_replayed("main")

    -- The proxy the load and most cases go through.
    start_proxy("main", {
      extra = "pool = { min = 1, max = 8 },",
      proxy = "max_message = 65536, timeouts = { client_login = 1 }",
    })
    -- md5 logins against a userlist (password "secret").
    local md5 = cluster.check("printf '%s' secretpostgres | md5sum"):match("^(%x+)")
    local userlist = bed.dir .. "/userlist.txt"
    local f = assert(io.open(userlist, "w"))
    f:write(('"postgres" "md5%s"\n'):format(md5))
    f:close()
    start_proxy("md5", {
      proxy = ("auth = { type = \"md5\", file = %q }, timeouts = { client_login = 1 }"):format(userlist),
      conninfo_extra = "password=secret",
    })
    -- Two backends per node and a short wait for one: the pool runs out.
    start_proxy("small", {
      extra = "pool = { min = 1, max = 2 },",
      proxy = "timeouts = { client_login = 1, wait_backend = 1 }",
    })

    load_out, load_stop = bed.dir .. "/load.out", bed.dir .. "/load.stop"
    load = bed:spawn(("env %sSY_LOAD_STOP=%s SY_LOAD_SECONDS=%d sh -c %s"):format(px_of("main").env(),
      quote(load_stop), LOAD_RUN_SECONDS, quote(LOAD_SCRIPT)), load_out)
  end)

  teardown(function()
    if load then load.stop() end
    for _, p in pairs(proxies) do pcall(p.px.stop) end
    if bed then bed:teardown() end
  end)

  -- A proxy a case killed is noted and started again on its port, so the
  -- later cases still test something; the final case fails on the note.
  before_each(function()
    for name, p in pairs(proxies) do
      if not cluster.pid_alive(p.px.pid) then
        crashes[#crashes + 1] = ("%s (pid %d, log %s)"):format(name, p.px.pid, p.px.log)
        pcall(p.px.stop)
        p.px = launch(p.opts)
      end
    end
  end)

  it("startup packets: length below 8 or above 10000, protocol 2.0, no user", function()
    local conns = {
      { name = "len4", steps = { { send_hex = hex(be32(4) .. PROTOCOL_3) }, read_close() } },
      { name = "len7", steps = { { send_hex = hex(be32(7) .. PROTOCOL_3) }, read_close() } },
      { name = "len10001", steps = { { send_hex = hex(be32(10001) .. PROTOCOL_3) }, read_close() } },
      { name = "len_huge", steps = { { send_hex = hex(be32(0x7fffffff) .. PROTOCOL_3) }, read_close() } },
      { name = "v2", steps = { { startup = { user = "postgres" }, version = { 2, 0 } }, read_close() } },
      { name = "v4", steps = { { startup = { user = "postgres" }, version = { 4, 0 } }, read_close() } },
      { name = "no_user", steps = { { startup = { database = "postgres" } }, read_close() } },
      -- the limit itself is fine: exactly 10000 bytes logs in
      { name = "len10000", steps = {
        { login = { user = "postgres", database = "postgres", application_name = ("a"):rep(9941) } },
        Q("SELECT 1"), read_until("Z") } },
    }
    local r = wire(px_of("main").port, conns)
    -- PostgreSQL: FATAL 08P01 "invalid length of startup packet"
    for _, name in ipairs({ "len4", "len7", "len10001", "len_huge" }) do
      assert_fatal_close(r[name], "08P01")
    end
    -- PostgreSQL: FATAL 0A000 "unsupported frontend protocol 2.0: ..."
    assert_fatal_close(r.v2, "0A000")
    assert.matches("unsupported frontend protocol", r.v2.errors[1].M)
    assert_fatal_close(r.v4, "0A000")
    -- PostgreSQL: FATAL 28000 "no PostgreSQL user name specified in startup packet"
    assert_fatal_close(r.no_user, "28000")
    assert.are.equal(10000, r.len10000.sent_bytes - 14, show(r.len10000)) -- and a 14-byte Query
    assert.are.same({ { "1" } }, r.len10000.rows, show(r.len10000))
    assert_alive("main")
  end)

  it("half a startup packet, then nothing: closed after timeouts.client_login (1 s)", function()
    local r = wire(px_of("main").port, {
      { name = "half", steps = { { startup = { user = "postgres", database = "postgres" }, truncate = 10 },
        read_close(8) } },
      { name = "header_only", steps = { { send_hex = hex(be32(100)) }, read_close(8) } },
    })
    for _, name in ipairs({ "half", "header_only" }) do
      local x = r[name]
      assert.is_true(x.closed, name .. ": not closed: " .. show(x))
      local after = x.closed_t - x.last_send_t
      assert.is_true(after >= 0.9 and after < 5, name .. ": closed " .. after .. " s after the last byte: " .. show(x))
      for _, e in ipairs(x.errors) do assert.are.equal("FATAL", e.S, show(x)) end
    end
    assert_alive("main")
  end)

  it("md5: a Query instead of the password is FATAL 08P01; the proxy still logs in with the password", function()
    local r = wire(px_of("md5").port, {
      { name = "q_first", steps = { { startup = { user = "postgres", database = "postgres" } },
        read_until("R"), Q("SELECT 1"), read_close() } },
      { name = "sync_first", steps = { { startup = { user = "postgres", database = "postgres" } },
        read_until("R"), SYNC, read_close() } },
    })
    for _, x in pairs(r) do
      assert.are.equal("R", x.messages[1] and x.messages[1].type, show(x))
      assert.are.equal(5, x.messages[1].auth, show(x)) -- AuthenticationMD5Password
      assert.are.equal(0, x.ready, show(x))
      -- PostgreSQL: FATAL 08P01 "expected password response, got message type 81"
      assert_fatal_close(x, "08P01")
    end
    local ok, out = px_of("md5").psql("SELECT 7", { conninfo = px_of("md5").conninfo("password=secret") })
    assert.is_true(ok, out)
    assert.are.equal("7", out)
    assert_alive("md5")
  end)

  it("after login: unknown message type, length below 4, a header over max_message", function()
    local r = wire(px_of("main").port, {
      { name = "type_z", steps = { LOGIN, msg("z"), read_close() } },
      { name = "type_nul", steps = { LOGIN, msg("\0"), read_close() } },
      { name = "len3", steps = { LOGIN, msg("Q", "", 3), read_close() } },
      { name = "len0", steps = { LOGIN, msg("S", "", 0), read_close() } },
      -- only the 5-byte header of a 1 MiB Query: refused from the header
      { name = "big", steps = { LOGIN, msg("Q", "", 1048576), read_close() } },
      { name = "huge", steps = { LOGIN, msg("P", "", 0xfffffff0), read_close() } },
      -- max_message counts the length word: 65536 passes, 65537 does not
      { name = "at_limit", steps = { LOGIN, Q("SELECT '" .. ("x"):rep(65522) .. "'"), read_until("Z") } },
      { name = "over_limit", steps = { LOGIN, Q("SELECT '" .. ("x"):rep(65523) .. "'"), read_close() } },
    })
    -- PostgreSQL: FATAL 08P01 "invalid frontend message type 122"
    assert_fatal_close(r.type_z, "08P01")
    assert.matches("invalid frontend message type", r.type_z.errors[1].M)
    assert_fatal_close(r.type_nul, "08P01")
    -- PostgreSQL: FATAL 08P01 "invalid message length"
    assert_fatal_close(r.len3, "08P01")
    assert_fatal_close(r.len0, "08P01")
    assert_fatal_close(r.big, { "08P01", "54000" })
    assert_fatal_close(r.huge, { "08P01", "54000" })
    assert_fatal_close(r.over_limit, { "08P01", "54000" })
    assert.are.equal(0, #r.at_limit.errors, show(r.at_limit))
    assert.are.equal(65522, #r.at_limit.rows[1][1])
    for _, x in pairs(r) do assert.is_true(x.ready >= 1, "not logged in: " .. show(x)) end
    assert_alive("main")
  end)

  it("a malformed Bind is ERROR 08P01, then ReadyForQuery, and the connection keeps working", function()
    local conns = {}
    for name, body in pairs(BAD_BINDS) do
      conns[#conns + 1] = { name = name, steps = { LOGIN, PARSE_SELECT_1, msg("B", body),
        msg("E", "\0" .. be32(0)), SYNC, read_until("Z"), Q("SELECT 42"), read_until("Z") } }
    end
    local r = wire(px_of("main").port, conns)
    for name in pairs(BAD_BINDS) do
      local x = r[name]
      -- PostgreSQL: ERROR 08P01 ("insufficient data left in message", ...)
      assert_error(x, "ERROR", "08P01")
      assert.are.equal(1, #x.errors, show(x))
      assert.is_false(x.closed, show(x))
      assert.are.same({ "I", "I", "I" }, statuses(x), show(x))
      assert.are.same({ { "42" } }, x.rows, show(x))
    end
    assert_alive("main")
  end)

  it("a malformed Bind inside a transaction block aborts it, as in PostgreSQL (COMMIT rolls back)", function()
    local r = wire(px_of("main").port, {
      { name = "tx", steps = { LOGIN, Q("BEGIN"), read_until("Z"), Q("INSERT INTO bad_input_tx VALUES (1)"),
        read_until("Z"), PARSE_SELECT_1, msg("B", BAD_BINDS.params_overrun), msg("E", "\0" .. be32(0)), SYNC,
        read_until("Z"), Q("SELECT 42"), read_until("Z"), Q("COMMIT"), read_until("Z") } },
    }).tx
    assert_error(r, "ERROR", "08P01")
    assert.is_false(r.closed, show(r))
    -- PostgreSQL: Z I, T, T, then E after the error; 25P02 for the SELECT;
    -- COMMIT answers ROLLBACK and the row is gone.
    local got = statuses(r)
    assert.are.equal("E", got[4], "status after the error inside BEGIN: " .. show(r))
    assert.are.equal("25P02", r.errors[2] and r.errors[2].C, show(r))
    assert.are.equal("ROLLBACK", r.commands[#r.commands], show(r))
    assert.are.equal("0", bed:psql(c.primary, "SELECT count(*) FROM bad_input_tx"))
    assert_alive("main")
  end)

  it("FunctionCall ('F') is ERROR 0A000, then ReadyForQuery; the connection stays usable", function()
    -- pg_backend_pid() (oid 2026) without arguments, text result
    local body = be32(2026) .. be16(0) .. be16(0) .. be16(0)
    local r = wire(px_of("main").port, {
      { name = "f", steps = { LOGIN, msg("F", body), read_until("Z"), Q("SELECT 42"), read_until("Z") } },
      { name = "f_in_tx", steps = { LOGIN, Q("BEGIN"), read_until("Z"), msg("F", body), read_until("Z"),
        Q("ROLLBACK"), read_until("Z"), Q("SELECT 43"), read_until("Z") } },
    })
    assert_error(r.f, "ERROR", "0A000")
    assert.is_false(r.f.closed, show(r.f))
    assert.are.same({ "I", "I", "I" }, statuses(r.f), show(r.f))
    assert.are.same({ { "42" } }, r.f.rows, show(r.f))
    assert_error(r.f_in_tx, "ERROR", "0A000")
    assert.are.same({ { "43" } }, r.f_in_tx.rows, show(r.f_in_tx))
    assert.are.equal("I", statuses(r.f_in_tx)[5], show(r.f_in_tx))
    assert_alive("main")
  end)

  -- Two connections hold both backends of the primary in a transaction; a
  -- third sends a query, waits for a backend and hangs up while waiting;
  -- three more log in afterwards (new clients take the memory the one that
  -- left had) and query once the holders are done.
  local function leave_while_waiting(hold_seconds)
    local conns = {}
    for i = 1, 2 do
      conns[i] = { name = "holder" .. i, steps = {
        LOGIN, Q("BEGIN"), read_until("Z"), Q("SELECT 1 /* sy: route=primary */"), read_until("Z"),
        { signal = "held" .. i }, { wait = "gone" }, { sleep = hold_seconds }, Q("COMMIT"), read_until("Z") } }
    end
    conns[3] = { name = "leaver", steps = { { wait = "held1" }, { wait = "held2" }, LOGIN,
      Q("SELECT 2 /* sy: route=primary */"), { sleep = 0.3 }, { shutdown = "write" }, read_close(3),
      { signal = "gone" } } }
    for i = 4, 6 do
      conns[i] = { name = "newcomer" .. i, steps = { { wait = "gone" }, LOGIN, { sleep = hold_seconds + 0.3 },
        Q("SELECT " .. i), read_until("Z") } }
    end
    return wire(px_of("small").port, conns, nil, true)
  end

  local function assert_round(r)
    assert_alive("small")
    assert.is_true(r.leaver.closed, show(r.leaver))
    for i = 1, 2 do
      local h = r["holder" .. i]
      assert.are.equal("COMMIT", h.commands[3], show(h))
    end
    for i = 4, 6 do
      local n = r["newcomer" .. i]
      assert.are.same({ { tostring(i) } }, n.rows, show(n))
    end
  end

  it("a client that hangs up while waiting for a backend does not keep one", function()
    assert_round(leave_while_waiting(0.2))
    -- Nobody is connected: both backends must be free again.
    local row
    local ok = pcall(cluster.wait_for, function()
      row = pool_row("small", "main.primary")
      return row.busy == 0
    end, 3, "free backends")
    assert.is_true(ok, "a backend stays busy with no client: SHOW POOLS " .. (row and row.line or "?"))
    local okq, out = px_of("small").psql("SELECT 3 /* sy: route=primary */")
    assert.is_true(okq, out)
    assert_alive("small")
  end)

  it("a client that hangs up while waiting for a backend: the wait timeout (1 s) passes, the proxy survives",
    function()
      -- A fresh proxy, whatever the case before left behind.
      local p = proxies.small
      p.px.stop()
      p.px = launch(p.opts)
      assert_round(leave_while_waiting(1.6))
      local ok, out = px_of("small").psql("SELECT 3 /* sy: route=primary */")
      assert.is_true(ok, out)
      assert_alive("small")
    end)

  it("random bytes: 200 seeded connections, before and after login, each end in an error or a close", function()
    local kinds = {
      -- 0: raw bytes as the startup packet, then wait
      function(seed) return { { random = { seed = seed, min = 1, max = 2000 } }, read_close(5) } end,
      -- 1: raw bytes as the startup packet, then half-close
      function(seed)
        return { { random = { seed = seed, min = 1, max = 2000 } }, { shutdown = "write" }, read_close(5) }
      end,
      -- 2: a well-framed startup packet with random parameters
      function(seed)
        return { { random_startup = { seed = seed, broken = seed % 7 == 0 } }, read_until("ZE", 1),
          Q("SELECT 1"), read_until("Z", 1), { shutdown = "write" }, read_close(5) }
      end,
      -- 3: raw bytes after login
      function(seed)
        return { LOGIN, { random = { seed = seed, min = 1, max = 2000 } }, { shutdown = "write" }, read_close(5) }
      end,
      -- 4: well-framed messages of client types with random bodies
      function(seed)
        return { LOGIN, { random_msgs = { seed = seed, count = 8, max = 250 } }, SYNC, read_until("Z", 1),
          { shutdown = "write" }, read_close(5) }
      end,
    }
    local conns = {}
    for i = 1, 200 do
      local seed = 7000 + i
      conns[i] = { name = ("r%03d_kind%d_seed%d"):format(i, i % 5, seed), steps = kinds[i % 5 + 1](seed) }
    end
    local r = wire(px_of("main").port, conns, 40, true)
    local problems, tally, refused = {}, {}, {}
    for name, x in pairs(r) do
      if not x.connected then refused[#refused + 1] = name end
    end
    table.sort(refused)
    assert.are.equal(0, #refused, ("%d connections refused (the proxy died before them), from %s on\n%s")
      :format(#refused, tostring(refused[1]), log_tail(px_of("main"))))
    for name, x in pairs(r) do
      local last = x.last_send_t or 0
      local e = x.errors[#x.errors]
      local outcome = (e and (e.S .. " " .. e.C) or "no error") .. (x.closed and ", closed" or ", OPEN")
      tally[outcome] = (tally[outcome] or 0) + 1
      if not x.closed then
        problems[#problems + 1] = name .. ": not closed within 5 s: " .. show(x)
      elseif x.closed_t - last > 4 then
        problems[#problems + 1] = name .. ": closed " .. (x.closed_t - last) .. " s after its last byte"
      end
      for _, err in ipairs(x.errors) do
        if not ((err.S == "ERROR" or err.S == "FATAL") and type(err.C) == "string"
            and err.C:match("^[0-9A-Z][0-9A-Z][0-9A-Z][0-9A-Z][0-9A-Z]$") and err.M) then
          problems[#problems + 1] = name .. ": malformed ErrorResponse: " .. show(x)
        end
      end
    end
    local lines = {}
    for k, v in pairs(tally) do lines[#lines + 1] = ("%4d %s"):format(v, k) end
    table.sort(lines)
    local summary = table.concat(lines, "\n")
    assert.is_true(cluster.pid_alive(px_of("main").pid), "the proxy died during the random run:\n" .. summary
      .. "\n" .. log_tail(px_of("main")))
    assert.are.equal(0, #problems, table.concat(problems, "\n") .. "\n" .. summary)
    local ok, out = px_of("main").psql("SELECT 1")
    assert.is_true(ok, out)
    assert_alive("main")
  end)

  it("a CancelRequest with a wrong key (or pid) is closed silently and cancels nothing", function()
    local sleep_sql = "SELECT pg_sleep(2)"
    local r = wire(px_of("main").port, {
      { name = "sleeper", steps = { LOGIN, { signal = "a" }, Q(sleep_sql), read_until("Z", 6) } },
      { name = "wrong_key", steps = { { wait = "a" }, { sleep = 0.5 }, { cancel_of = "sleeper", key_add = 1 },
        read_close(3) } },
      { name = "wrong_pid", steps = { { wait = "a" }, { sleep = 0.5 }, { cancel_of = "sleeper", pid_add = 7 },
        read_close(3) } },
      -- the right key cancels: the wrong ones had something to cancel
      { name = "sleeper2", steps = { LOGIN, { signal = "b" }, Q(sleep_sql), read_until("Z", 6) } },
      { name = "right_key", steps = { { wait = "b" }, { sleep = 0.5 }, { cancel_of = "sleeper2" }, read_close(3) } },
    })
    for _, name in ipairs({ "wrong_key", "wrong_pid", "right_key" }) do
      assert.is_true(r[name].closed, show(r[name]))
      assert.are.equal(0, r[name].received_bytes, show(r[name]))
    end
    assert.are.equal(0, #r.sleeper.errors, show(r.sleeper))
    assert.are.same({ { "" } }, r.sleeper.rows, show(r.sleeper))
    assert.is_true(r.sleeper.elapsed >= 1.9, show(r.sleeper))
    assert_error(r.sleeper2, "ERROR", "57014")
    assert_alive("main")
  end)

  it("the load saw no failed transaction, no proxy crashed, psql still works", function()
    -- It must have lasted the whole run.
    assert.is_true(cluster.pid_alive(load.pid), "the load ended before the last case:\n"
      .. (cluster.read_file(load_out) or ""))
    assert(io.open(load_stop, "w")):close()
    cluster.wait_for(function() return not cluster.pid_alive(load.pid) end, LOAD_RUN_SECONDS + 30, "the load to end")
    local out = cluster.read_file(load_out) or ""
    local runs, tx = 0, 0
    for code in out:gmatch("SY%-LOAD%-EXIT (%d+)") do
      runs = runs + 1
      assert.are.equal("0", code, "a pgbench run failed:\n" .. out)
    end
    for n in out:gmatch("number of transactions actually processed: (%d+)") do tx = tx + tonumber(n) end
    for n in out:gmatch("number of failed transactions: (%d+)") do assert.are.equal("0", n, out) end
    assert.is_nil(out:match("aborted"), "the load was aborted:\n" .. out)
    assert.is_nil(out:match("error"), out)
    assert.is_true(runs >= 3 and tx > 100 * runs, runs .. " runs, " .. tx .. " transactions:\n" .. out)
    assert.are.equal(0, #crashes, "proxies that died (and were restarted):\n" .. table.concat(crashes, "\n"))
    for _, name in ipairs({ "main", "md5", "small" }) do assert_alive(name) end
    local ok, res = px_of("main").psql("SELECT count(*) FROM pgbench_accounts")
    assert.is_true(ok, res)
    assert.are.equal("100000", res)
  end)
end)

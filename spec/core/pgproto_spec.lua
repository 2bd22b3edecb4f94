-- The wire-protocol codec (core/pgproto.c, core/pgproto_build.c) through
-- the FFI: framing (startup phase and normal messages, whole and one byte
-- at a time), every parser against bytes written by hand from the
-- "Message Formats" section of the PostgreSQL documentation, every builder
-- byte for byte and round-tripped through the parsers, malformed input of
-- every kind, and a time-bounded libFuzzer run of spec/support/fuzz_pgproto.c.
local sy = require("support.ffi")
local ffi, lib = sy.ffi, sy.lib
local bit = require("bit")

-- The declarations come from core/pgproto.h itself, so the spec cannot
-- drift from it; only its #includes are dropped (the FFI knows the
-- <stdint.h> types) and util.h's sy_buf is declared here.
do
  ffi.cdef([[
    typedef struct sy_buf { char *buf; size_t len, cap; int oom; } sy_buf;
    void sy__buf_init(sy_buf *b);
    void sy__buf_free(sy_buf *b);
    void sy__buf_reset(sy_buf *b);
  ]])
  sy.cdef_internal("pgproto")
end

local OK, NEED_MORE, ERROR = 0, 1, -1

-- ---- helpers ---------------------------------------------------------------

local function be32(n)
  n = n % 4294967296
  return string.char(bit.band(bit.rshift(n, 24), 255), bit.band(bit.rshift(n, 16), 255),
    bit.band(bit.rshift(n, 8), 255), bit.band(n, 255))
end
local function be16(n)
  n = n % 65536
  return string.char(bit.band(bit.rshift(n, 8), 255), bit.band(n, 255))
end
local function msg(t, body) return t .. be32(#body + 4) .. body end
local function str(s) return s .. "\0" end

-- Keeps the bytes alive in a C array: spans point into it.
local keep = {}
local function cbytes(s)
  local p = ffi.new("char[?]", math.max(#s, 1))
  ffi.copy(p, s, #s)
  keep[#keep + 1] = p
  return p
end

local function err_t() return ffi.new("sy_pg_error") end

local function frame(s, max_len, avail)
  local m, e = ffi.new("sy_pg_msg"), err_t()
  local rc = lib.sy__pg_frame(cbytes(s), avail or #s, max_len or 0, m, e)
  return rc, m, e
end

local function startup(s, max_len, avail)
  local st, e = ffi.new("sy_pg_startup"), err_t()
  local rc = lib.sy__pg_read_startup(cbytes(s), avail or #s, max_len or 0, st, e)
  return rc, st, e
end

local function sp(s)
  if s.p == nil then return nil end
  return ffi.string(s.p, s.len)
end

local function framed(s)
  local rc, m, e = frame(s)
  assert.are.equal(OK, rc, ffi.string(e.message))
  assert.are.equal(#s, tonumber(m.total))
  return m
end

-- Calls a parser on a message string; returns rc, out, error text.
local function parse(fn, ctype, s)
  local m = framed(s)
  local out, e = ffi.new(ctype), err_t()
  local rc = lib[fn](m, out, e)
  return rc, out, (rc == ERROR) and ffi.string(e.message) or nil, e
end

local function build(fn, ...)
  local b = ffi.new("sy_buf")
  lib.sy__buf_init(b)
  local rc = lib[fn](b, ...)
  local s = ffi.string(b.buf, b.len)
  lib.sy__buf_free(b)
  return rc, s
end

local function built(fn, ...)
  local rc, s = build(fn, ...)
  assert.are.equal(0, rc)
  return s
end

local function strings(list)
  local arr = ffi.new("const char *[?]", #list + 1)
  for i, v in ipairs(list) do arr[i - 1] = v end
  keep[#keep + 1] = arr
  return arr
end

-- Every truncation of the payload (length word rewritten to match) and one
-- extra trailing byte must be refused by parser fn with an error.
local function refuses_damage(fn, ctype, s, opts)
  opts = opts or {}
  local t, body = s:sub(1, 1), s:sub(6)
  for n = 0, #body - 1 do
    local rc, _, text = parse(fn, ctype, msg(t, body:sub(1, n)))
    assert.are.equal(ERROR, rc, fn .. " accepted a payload cut to " .. n .. " bytes")
    assert.is_truthy(text:find("invalid", 1, true))
  end
  if not opts.trailing_ok then
    local rc = parse(fn, ctype, msg(t, body .. "x"))
    assert.are.equal(ERROR, rc, fn .. " accepted a trailing byte")
  end
end

-- ---- framing ---------------------------------------------------------------

describe("framing normal messages", function()
  local sync = "S\0\0\0\4"
  local query = "Q\0\0\0\13SELECT 1\0"

  it("asks for the 5-byte header, then for exactly the rest", function()
    for n = 0, 4 do
      local rc, m = frame(query, 0, n)
      assert.are.equal(NEED_MORE, rc)
      assert.are.equal(5, tonumber(m.total))
    end
    for n = 5, #query - 1 do
      local rc, m = frame(query, 0, n)
      assert.are.equal(NEED_MORE, rc)
      assert.are.equal(#query, tonumber(m.total))
    end
    local rc, m = frame(query .. sync)
    assert.are.equal(OK, rc)
    assert.are.equal(string.byte("Q"), m.type)
    assert.are.equal(13, m.len)
    assert.are.equal(14, tonumber(m.total))
    assert.are.equal("SELECT 1\0", ffi.string(m.payload, m.payload_len))
  end)

  it("frames a body-less message", function()
    local m = framed(sync)
    assert.are.equal(0, tonumber(m.payload_len))
  end)

  it("refuses a length below 4", function()
    for len = 0, 3 do
      local rc, _, e = frame("S" .. be32(len))
      assert.are.equal(ERROR, rc)
      assert.are.equal("08P01", ffi.string(e.sqlstate))
      assert.is_truthy(ffi.string(e.message):find("invalid length " .. len, 1, true))
    end
  end)

  it("refuses an oversized message from its header alone, before buffering it", function()
    local rc, _, e = frame("Q" .. be32(1001), 1000)
    assert.are.equal(ERROR, rc)
    assert.is_truthy(ffi.string(e.message):find("exceeds the limit of 1000", 1, true))
    -- A huge length word with the default limit.
    rc = frame("d" .. be32(0x7fffffff))
    assert.are.equal(ERROR, rc)
    rc = frame("d\255\255\255\255")
    assert.are.equal(ERROR, rc)
    -- Exactly at the limit is fine.
    rc = frame(msg("d", ("x"):rep(996)), 1000)
    assert.are.equal(OK, rc)
  end)

  it("splits a stream fed one byte at a time into the same messages", function()
    local stream = query .. sync .. msg("P", str("s1") .. str("SELECT $1") .. be16(1) .. be32(23))
      .. msg("d", ("\0\1\2"):rep(50)) .. sync
    local expect = { "Q", "S", "P", "d", "S" }
    local got, buf = {}, ""
    for i = 1, #stream do
      buf = buf .. stream:sub(i, i)
      while true do
        local rc, m = frame(buf)
        assert.are_not.equal(ERROR, rc)
        if rc == NEED_MORE then
          assert.is_true(tonumber(m.total) > #buf)
          break
        end
        got[#got + 1] = string.char(m.type)
        buf = buf:sub(tonumber(m.total) + 1)
      end
    end
    assert.are.same(expect, got)
    assert.are.equal("", buf)
  end)
end)

describe("framing the startup phase", function()
  -- StartupMessage for user=alice database=shop, protocol 3.0.
  local body = be32(196608) .. str("user") .. str("alice") .. str("database") .. str("shop") .. "\0"
  local startup_msg = be32(#body + 4) .. body

  it("parses a StartupMessage and its parameters", function()
    local rc, st, e = startup(startup_msg)
    assert.are.equal(OK, rc, ffi.string(e.message))
    assert.are.equal(lib.SY_PG_STARTUP, st.kind)
    assert.are.equal(3, st.major)
    assert.are.equal(0, st.minor)
    assert.are.equal(0, st.needs_negotiate)
    assert.are.equal(2, st.nparams)
    assert.are.equal(#startup_msg, tonumber(st.msg.total))
    local pos, k, v = ffi.new("size_t[1]"), ffi.new("sy_pg_span"), ffi.new("sy_pg_span")
    local pairs_ = {}
    while lib.sy__pg_startup_next_param(st, pos, k, v) == 1 do
      pairs_[#pairs_ + 1] = sp(k) .. "=" .. sp(v)
    end
    assert.are.same({ "user=alice", "database=shop" }, pairs_)
    assert.are.equal(1, lib.sy__pg_startup_param(st, "database", v))
    assert.are.equal("shop", sp(v))
    assert.are.equal(0, lib.sy__pg_startup_param(st, "options", v))
  end)

  it("matches the builder byte for byte", function()
    assert.are.equal(startup_msg,
      built("sy__pg_build_startup", strings({ "user", "database" }), strings({ "alice", "shop" }), 2))
  end)

  it("accepts an empty value and an empty parameter list", function()
    local b = be32(196608) .. str("options") .. str("") .. "\0"
    local rc, st = startup(be32(#b + 4) .. b)
    assert.are.equal(OK, rc)
    assert.are.equal(1, st.nparams)
    rc, st = startup(be32(9) .. be32(196608) .. "\0")
    assert.are.equal(OK, rc)
    assert.are.equal(0, st.nparams)
  end)

  it("recognises SSLRequest, GSSENCRequest and CancelRequest from the documented bytes", function()
    local rc, st = startup("\0\0\0\8\4\210\22\47")
    assert.are.equal(OK, rc)
    assert.are.equal(lib.SY_PG_SSL_REQUEST, st.kind)
    assert.are.equal("\0\0\0\8\4\210\22\47", built("sy__pg_build_ssl_request"))
    rc, st = startup("\0\0\0\8\4\210\22\48")
    assert.are.equal(OK, rc)
    assert.are.equal(lib.SY_PG_GSSENC_REQUEST, st.kind)
    local cancel = "\0\0\0\16\4\210\22\46" .. be32(4242) .. be32(0xdeadbeef)
    rc, st = startup(cancel)
    assert.are.equal(OK, rc)
    assert.are.equal(lib.SY_PG_CANCEL_REQUEST, st.kind)
    assert.are.equal(4242, st.cancel_pid)
    assert.are.equal(0xdeadbeef, tonumber(st.cancel_key))
    assert.are.equal(cancel, built("sy__pg_build_cancel_request", 4242, 0xdeadbeef))
  end)

  it("flags a newer 3.x minor for NegotiateProtocolVersion", function()
    local b = be32(196608 + 2) .. str("user") .. str("u") .. str("_pq_.x") .. str("1") .. "\0"
    local rc, st = startup(be32(#b + 4) .. b)
    assert.are.equal(OK, rc)
    assert.are.equal(2, st.minor)
    assert.are.equal(1, st.needs_negotiate)
    assert.are.equal("v" .. be32(4 + 4 + 4 + 7) .. be32(0) .. be32(1) .. str("_pq_.x"),
      built("sy__pg_build_negotiate", 0, strings({ "_pq_.x" })))
  end)

  it("refuses other protocol majors with a clear error", function()
    for _, v in ipairs({ { 2, 0 }, { 4, 0 }, { 1, 0 } }) do
      local b = be32(v[1] * 65536 + v[2]) .. str("user") .. str("u") .. "\0"
      local rc, _, e = startup(be32(#b + 4) .. b)
      assert.are.equal(ERROR, rc)
      assert.are.equal("0A000", ffi.string(e.sqlstate))
      assert.are.equal(("unsupported frontend protocol %d.%d: server supports 3.0 to 3.0"):format(v[1], v[2]),
        ffi.string(e.message))
    end
  end)

  it("refuses malformed startup packets", function()
    local cases = {
      unknown_code = "\0\0\0\8\4\210\22\49",
      short_length = "\0\0\0\7\0\3\0\0",
      zero_length = "\0\0\0\0\0\0\0\0",
      ssl_too_long = "\0\0\0\12\4\210\22\47\0\0\0\0",
      cancel_too_short = "\0\0\0\12\4\210\22\46\0\0\0\1",
      cancel_too_long = "\0\0\0\20\4\210\22\46" .. ("\0"):rep(12),
      no_terminator = (function()
        local b = be32(196608) .. str("user") .. str("u")
        return be32(#b + 4) .. b
      end)(),
      key_without_value = (function()
        local b = be32(196608) .. str("user") .. "\0"
        return be32(#b + 4) .. b
      end)(),
      unterminated_value = (function()
        local b = be32(196608) .. str("user") .. "u"
        return be32(#b + 4) .. b
      end)(),
      trailing_garbage = (function()
        local b = be32(196608) .. str("user") .. str("u") .. "\0junk"
        return be32(#b + 4) .. b
      end)(),
      version_only = be32(8) .. be32(196608),
    }
    for name, bytes in pairs(cases) do
      local rc, _, e = startup(bytes)
      assert.are.equal(ERROR, rc, name)
      assert.is_true(#ffi.string(e.message) > 0, name)
    end
  end)

  it("refuses an oversized startup packet from its length word", function()
    local rc, _, e = startup(be32(10001))
    assert.are.equal(ERROR, rc)
    assert.is_truthy(ffi.string(e.message):find("exceeds the limit of 10000", 1, true))
    rc = startup(be32(200) .. be32(196608), 100)
    assert.are.equal(ERROR, rc)
    rc = startup("\255\255\255\255")
    assert.are.equal(ERROR, rc)
  end)

  it("asks for more one byte at a time, then parses", function()
    for n = 0, #startup_msg - 1 do
      local rc, st = startup(startup_msg, 0, n)
      assert.are.equal(NEED_MORE, rc)
      assert.are.equal(n < 4 and 4 or #startup_msg, tonumber(st.msg.total))
    end
    assert.are.equal(OK, (startup(startup_msg)))
  end)
end)

-- ---- client messages -------------------------------------------------------

describe("client messages", function()
  it("Query", function()
    local q = "Q\0\0\0\13SELECT 1\0"
    local m = framed(q)
    local s = ffi.new("sy_pg_span")
    assert.are.equal(OK, lib.sy__pg_parse_query(m, s, nil))
    assert.are.equal("SELECT 1", sp(s))
    assert.are.equal(q, built("sy__pg_build_query", "SELECT 1", 8))
    assert.are.equal(-1, (build("sy__pg_build_query", "SELECT\0 1", 9)))
    refuses_damage("sy__pg_parse_query", "sy_pg_span", q)
    -- No NUL inside the length.
    local rc = parse("sy__pg_parse_query", "sy_pg_span", msg("Q", "SELECT 1"))
    assert.are.equal(ERROR, rc)
  end)

  it("Parse with parameter type OIDs", function()
    local p = "P" .. be32(4 + 3 + 19 + 2 + 8) .. str("s1") .. str("SELECT $1::int, $2") .. be16(2)
      .. be32(23) .. be32(25)
    local rc, out = parse("sy__pg_parse_parse", "sy_pg_parse", p)
    assert.are.equal(OK, rc)
    assert.are.equal("s1", sp(out.name))
    assert.are.equal("SELECT $1::int, $2", sp(out.query))
    assert.are.equal(2, out.nparams)
    assert.are.equal(23, lib.sy__pg_parse_param_type(out, 0))
    assert.are.equal(25, lib.sy__pg_parse_param_type(out, 1))
    local oids = ffi.new("uint32_t[2]", { 23, 25 })
    local q = "SELECT $1::int, $2"
    assert.are.equal(p, built("sy__pg_build_parse", "s1", q, #q, 2, oids))
    refuses_damage("sy__pg_parse_parse", "sy_pg_parse", p)
    -- A count beyond the payload.
    rc = parse("sy__pg_parse_parse", "sy_pg_parse", msg("P", str("") .. str("SELECT 1") .. be16(100) .. be32(23)))
    assert.are.equal(ERROR, rc)
    rc = parse("sy__pg_parse_parse", "sy_pg_parse", msg("P", str("") .. str("SELECT 1") .. be16(65535)))
    assert.are.equal(ERROR, rc)
  end)

  -- Bind portal "" statement "s1": formats {1 applies to all}, values
  -- "42" and NULL, one result format (binary).
  local bind = "B" .. be32(4 + 1 + 3 + 2 + 2 + 2 + 4 + 2 + 4 + 2 + 2) .. str("") .. str("s1")
    .. be16(1) .. be16(1) .. be16(2) .. be32(2) .. "42" .. be32(-1) .. be16(1) .. be16(1)

  it("Bind with values, a NULL and format codes", function()
    local rc, b, text = parse("sy__pg_parse_bind", "sy_pg_bind", bind)
    assert.are.equal(OK, rc, text)
    assert.are.equal("", sp(b.portal))
    assert.are.equal("s1", sp(b.statement))
    assert.are.equal(1, b.nformats)
    assert.are.equal(2, b.nparams)
    assert.are.equal(1, b.nresults)
    assert.are.equal(1, lib.sy__pg_bind_param_format(b, 0))
    assert.are.equal(1, lib.sy__pg_bind_param_format(b, 1))
    assert.are.equal(1, lib.sy__pg_bind_result_format(b, 5))
    local pos, v, vals = ffi.new("size_t[1]"), ffi.new("sy_pg_span"), {}
    while lib.sy__pg_bind_next_value(b, pos, v) == 1 do
      vals[#vals + 1] = sp(v) or "NULL"
    end
    assert.are.same({ "42", "NULL" }, vals)
    local values = ffi.new("const char *[2]", { "42", nil })
    local lens = ffi.new("int32_t[2]", { 2, -1 })
    local f = ffi.new("int16_t[1]", { 1 })
    assert.are.equal(bind, built("sy__pg_build_bind", "", "s1", 1, f, 2, values, lens, 1, f))
    refuses_damage("sy__pg_parse_bind", "sy_pg_bind", bind)
  end)

  it("Bind with no formats, no parameters, an empty value and per-parameter formats", function()
    local b0 = msg("B", str("p") .. str("") .. be16(0) .. be16(0) .. be16(0))
    local rc, b = parse("sy__pg_parse_bind", "sy_pg_bind", b0)
    assert.are.equal(OK, rc)
    assert.are.equal("p", sp(b.portal))
    assert.are.equal(0, lib.sy__pg_bind_param_format(b, 0))
    local b2 = msg("B", str("") .. str("") .. be16(2) .. be16(0) .. be16(1) .. be16(2)
      .. be32(0) .. be32(4) .. "\0\0\0\7" .. be16(0))
    rc, b = parse("sy__pg_parse_bind", "sy_pg_bind", b2)
    assert.are.equal(OK, rc)
    assert.are.equal(0, lib.sy__pg_bind_param_format(b, 0))
    assert.are.equal(1, lib.sy__pg_bind_param_format(b, 1))
    local pos, v = ffi.new("size_t[1]"), ffi.new("sy_pg_span")
    assert.are.equal(1, lib.sy__pg_bind_next_value(b, pos, v))
    assert.are.equal("", sp(v))
    assert.are.equal(1, lib.sy__pg_bind_next_value(b, pos, v))
    assert.are.equal("\0\0\0\7", sp(v))
    assert.are.equal(0, lib.sy__pg_bind_next_value(b, pos, v))
  end)

  it("refuses Binds whose counts or lengths do not fit", function()
    local cases = {
      nparams_beyond = msg("B", str("") .. str("") .. be16(0) .. be16(5) .. be32(1) .. "x" .. be16(0)),
      value_beyond = msg("B", str("") .. str("") .. be16(0) .. be16(1) .. be32(100) .. "x" .. be16(0)),
      value_huge = msg("B", str("") .. str("") .. be16(0) .. be16(1) .. be32(0x7fffffff) .. be16(0)),
      value_minus_two = msg("B", str("") .. str("") .. be16(0) .. be16(1) .. be32(-2) .. be16(0)),
      nformats_mismatch = msg("B", str("") .. str("") .. be16(2) .. be16(0) .. be16(0) .. be16(3)
        .. be32(-1) .. be32(-1) .. be32(-1) .. be16(0)),
      nformats_beyond = msg("B", str("") .. str("") .. be16(300) .. be16(0)),
      bad_format_code = msg("B", str("") .. str("") .. be16(1) .. be16(2) .. be16(0) .. be16(0)),
      bad_result_code = msg("B", str("") .. str("") .. be16(0) .. be16(0) .. be16(1) .. be16(7)),
      nresults_beyond = msg("B", str("") .. str("") .. be16(0) .. be16(0) .. be16(9) .. be16(0)),
      no_statement_nul = msg("B", str("") .. "s1"),
    }
    for name, bytes in pairs(cases) do
      local rc, _, text = parse("sy__pg_parse_bind", "sy_pg_bind", bytes)
      assert.are.equal(ERROR, rc, name)
      assert.is_true(#text > 0, name)
    end
  end)

  it("copies a client's Bind under a new statement name", function()
    local rc, b = parse("sy__pg_parse_bind", "sy_pg_bind", bind)
    assert.are.equal(OK, rc)
    local renamed = built("sy__pg_build_bind_renamed", b, "sy_s_17", 7)
    assert.are.equal("B" .. be32(#bind - 1 + 5) .. str("") .. str("sy_s_17") .. bind:sub(10), renamed)
    local rc2, b2 = parse("sy__pg_parse_bind", "sy_pg_bind", renamed)
    assert.are.equal(OK, rc2)
    assert.are.equal("sy_s_17", sp(b2.statement))
    assert.are.equal(2, b2.nparams)
    assert.are.equal(-1, (build("sy__pg_build_bind_renamed", b, "a\0b", 3)))
  end)

  it("Describe and Close", function()
    for _, kind in ipairs({ "S", "P" }) do
      for _, t in ipairs({ { "D", "describe" }, { "C", "close" } }) do
        local bytes = t[1] .. be32(4 + 1 + 5) .. kind .. str("name")
        local rc, out = parse("sy__pg_parse_" .. t[2], "sy_pg_target", bytes)
        assert.are.equal(OK, rc)
        assert.are.equal(kind, string.char(out.kind))
        assert.are.equal("name", sp(out.name))
        assert.are.equal(bytes, built("sy__pg_build_" .. t[2], kind:byte(), "name"))
        refuses_damage("sy__pg_parse_" .. t[2], "sy_pg_target", bytes)
      end
    end
    local rc, _, text = parse("sy__pg_parse_describe", "sy_pg_target", msg("D", "X" .. str("n")))
    assert.are.equal(ERROR, rc)
    assert.is_truthy(text:find("invalid DESCRIBE message subtype 88", 1, true))
    assert.are.equal(-1, (build("sy__pg_build_close", string.byte("X"), "n")))
  end)

  it("Execute with a row limit", function()
    local bytes = "E" .. be32(4 + 3 + 4) .. str("c1") .. be32(100)
    local rc, out = parse("sy__pg_parse_execute", "sy_pg_execute", bytes)
    assert.are.equal(OK, rc)
    assert.are.equal("c1", sp(out.portal))
    assert.are.equal(100, out.max_rows)
    assert.are.equal(bytes, built("sy__pg_build_execute", "c1", 100))
    refuses_damage("sy__pg_parse_execute", "sy_pg_execute", bytes)
  end)

  it("Sync, Flush, Terminate and CopyDone have no body", function()
    assert.are.equal("S\0\0\0\4", built("sy__pg_build_sync"))
    assert.are.equal("H\0\0\0\4", built("sy__pg_build_flush"))
    assert.are.equal("X\0\0\0\4", built("sy__pg_build_terminate"))
    assert.are.equal("c\0\0\0\4", built("sy__pg_build_empty", string.byte("c")))
    for _, t in ipairs({ "S", "H", "X", "c" }) do
      assert.are.equal(OK, lib.sy__pg_parse_empty(framed(t .. "\0\0\0\4"), nil))
      local e = err_t()
      assert.are.equal(ERROR, lib.sy__pg_parse_empty(framed(msg(t, "x")), e))
      assert.is_truthy(ffi.string(e.message):find("1 extra bytes", 1, true))
    end
  end)

  it("CopyData and CopyFail", function()
    local rc, out = parse("sy__pg_parse_copy_data", "sy_pg_span", msg("d", "1\t2\n"))
    assert.are.equal(OK, rc)
    assert.are.equal("1\t2\n", sp(out))
    rc, out = parse("sy__pg_parse_copy_data", "sy_pg_span", msg("d", ""))
    assert.are.equal(OK, rc)
    assert.are.equal(0, tonumber(out.len))
    local fail = msg("f", str("client gave up"))
    rc, out = parse("sy__pg_parse_copy_fail", "sy_pg_span", fail)
    assert.are.equal(OK, rc)
    assert.are.equal("client gave up", sp(out))
    refuses_damage("sy__pg_parse_copy_fail", "sy_pg_span", fail)
  end)

  it("PasswordMessage, SASLInitialResponse and SASLResponse", function()
    local pw = msg("p", str("md5abc"))
    local rc, out = parse("sy__pg_parse_password", "sy_pg_span", pw)
    assert.are.equal(OK, rc)
    assert.are.equal("md5abc", sp(out))
    refuses_damage("sy__pg_parse_password", "sy_pg_span", pw)

    local first = "n,,n=,r=abc"
    local init = msg("p", str("SCRAM-SHA-256") .. be32(#first) .. first)
    local si
    rc, si = parse("sy__pg_parse_sasl_initial", "sy_pg_sasl_initial", init)
    assert.are.equal(OK, rc)
    assert.are.equal("SCRAM-SHA-256", sp(si.mechanism))
    assert.are.equal(first, sp(si.data))
    refuses_damage("sy__pg_parse_sasl_initial", "sy_pg_sasl_initial", init)
    rc, si = parse("sy__pg_parse_sasl_initial", "sy_pg_sasl_initial", msg("p", str("X") .. be32(-1)))
    assert.are.equal(OK, rc)
    assert.is_nil(sp(si.data))
    rc = parse("sy__pg_parse_sasl_initial", "sy_pg_sasl_initial", msg("p", str("X") .. be32(-5)))
    assert.are.equal(ERROR, rc)
    rc = parse("sy__pg_parse_sasl_initial", "sy_pg_sasl_initial", msg("p", str("X") .. be32(50) .. "ab"))
    assert.are.equal(ERROR, rc)

    rc, out = parse("sy__pg_parse_sasl_response", "sy_pg_span", msg("p", "c=biws,r=abc,p=xyz"))
    assert.are.equal(OK, rc)
    assert.are.equal("c=biws,r=abc,p=xyz", sp(out))
  end)

  it("knows which types a client may send, FunctionCall included (to refuse it)", function()
    for t in ("QPBDCESHXdcfpF"):gmatch(".") do
      assert.are.equal(1, lib.sy__pg_frontend_type_known(t:byte()), t)
    end
    for t in ("ZRTkq\0\255"):gmatch(".") do
      assert.are.equal(0, lib.sy__pg_frontend_type_known(t:byte()), t)
    end
    assert.are.equal(string.byte("F"), lib.SY_PG_FUNCTION_CALL)
  end)
end)

-- ---- server messages -------------------------------------------------------

describe("server messages", function()
  local function ready(status_byte)
    local m = framed("Z\0\0\0\5" .. status_byte)
    local s, e = ffi.new("char[1]"), err_t()
    return lib.sy__pg_parse_ready(m, s, e), string.char(s[0])
  end

  it("ReadyForQuery", function()
    for st in ("ITE"):gmatch(".") do
      local rc, got = ready(st)
      assert.are.equal(OK, rc)
      assert.are.equal(st, got)
      assert.are.equal("Z\0\0\0\5" .. st, built("sy__pg_build_ready", st:byte()))
    end
    assert.are.equal(ERROR, (ready("Q")))
    assert.are.equal(-1, (build("sy__pg_build_ready", string.byte("Q"))))
    local s = ffi.new("char[1]")
    assert.are.equal(ERROR, lib.sy__pg_parse_ready(framed("Z\0\0\0\4"), s, nil))
    assert.are.equal(ERROR, lib.sy__pg_parse_ready(framed("Z\0\0\0\6II"), s, nil))
  end)

  local function fields(m)
    local pos, code, v, out = ffi.new("size_t[1]"), ffi.new("char[1]"), ffi.new("sy_pg_span"), {}
    while lib.sy__pg_next_field(m, pos, code, v) == 1 do
      out[#out + 1] = string.char(code[0]) .. "=" .. sp(v)
    end
    return out
  end

  it("ErrorResponse and NoticeResponse fields, hand-written and built", function()
    local body = "SERROR\0VERROR\0C42P01\0Mrelation \"nope\" does not exist\0P15\0\0"
    local m = framed(msg("E", body))
    assert.are.equal(OK, lib.sy__pg_parse_fields(m, nil))
    assert.are.same({ "S=ERROR", "V=ERROR", "C=42P01", 'M=relation "nope" does not exist', "P=15" }, fields(m))
    local v = ffi.new("sy_pg_span")
    assert.are.equal(1, lib.sy__pg_find_field(m, string.byte("C"), v))
    assert.are.equal("42P01", sp(v))
    assert.are.equal(0, lib.sy__pg_find_field(m, string.byte("H"), v))

    local f = ffi.new("sy_pg_notice_fields", { "FATAL", "08P01", "bad message", "it was short", "retry" })
    local e = built("sy__pg_build_error", f)
    assert.are.equal(msg("E", "SFATAL\0VFATAL\0C08P01\0Mbad message\0Dit was short\0Hretry\0\0"), e)
    assert.are.same({ "S=FATAL", "V=FATAL", "C=08P01", "M=bad message", "D=it was short", "H=retry" },
      fields(framed(e)))
    local n = built("sy__pg_build_notice", ffi.new("sy_pg_notice_fields", { "NOTICE", "00000", "hello" }))
    assert.are.equal(msg("N", "SNOTICE\0VNOTICE\0C00000\0Mhello\0\0"), n)
    assert.are.equal(OK, lib.sy__pg_parse_fields(framed(n), nil))
    -- Required fields.
    assert.are.equal(-1, (build("sy__pg_build_error", ffi.new("sy_pg_notice_fields", { "ERROR", "123" }))))
    assert.are.equal(-1, (build("sy__pg_build_error", ffi.new("sy_pg_notice_fields"))))
  end)

  it("refuses broken field lists, and walks them without over-reading", function()
    for _, body in ipairs({ "", "SERROR", "SERROR\0", "SERROR\0\0x", "S" }) do
      local m = framed(msg("E", body))
      assert.are.equal(ERROR, lib.sy__pg_parse_fields(m, nil), body)
      fields(m)
    end
  end)

  it("ParameterStatus, BackendKeyData, CommandComplete", function()
    local ps = msg("S", str("TimeZone") .. str("UTC"))
    assert.are.equal(ps, built("sy__pg_build_parameter_status", "TimeZone", "UTC"))
    local name, value = ffi.new("sy_pg_span"), ffi.new("sy_pg_span")
    assert.are.equal(OK, lib.sy__pg_parse_parameter_status(framed(ps), name, value, nil))
    assert.are.equal("TimeZone", sp(name))
    assert.are.equal("UTC", sp(value))
    assert.are.equal(ERROR, lib.sy__pg_parse_parameter_status(framed(msg("S", str("TimeZone"))), name, value, nil))

    local key = "K\0\0\0\12" .. be32(31337) .. be32(0x80000001)
    assert.are.equal(key, built("sy__pg_build_backend_key", 31337, 0x80000001))
    local pid, k = ffi.new("uint32_t[1]"), ffi.new("uint32_t[1]")
    assert.are.equal(OK, lib.sy__pg_parse_backend_key(framed(key), pid, k, nil))
    assert.are.equal(31337, pid[0])
    assert.are.equal(0x80000001, tonumber(k[0]))
    assert.are.equal(ERROR, lib.sy__pg_parse_backend_key(framed(msg("K", be32(1))), pid, k, nil))
    assert.are.equal(ERROR, lib.sy__pg_parse_backend_key(framed(msg("K", be32(1) .. be32(2) .. "x")), pid, k, nil))

    local cc = "C\0\0\0\13SELECT 1\0"
    assert.are.equal(cc, built("sy__pg_build_command_complete", "SELECT 1"))
    local rc, tag = parse("sy__pg_parse_command_complete", "sy_pg_span", cc)
    assert.are.equal(OK, rc)
    assert.are.equal("SELECT 1", sp(tag))
    refuses_damage("sy__pg_parse_command_complete", "sy_pg_span", cc)
  end)

  it("ParseComplete, BindComplete and the opaque RowDescription / DataRow", function()
    assert.are.equal("1\0\0\0\4", built("sy__pg_build_empty", string.byte("1")))
    assert.are.equal("2\0\0\0\4", built("sy__pg_build_empty", string.byte("2")))
    assert.are.equal(OK, lib.sy__pg_parse_empty(framed("1\0\0\0\4"), nil))
    assert.are.equal(OK, lib.sy__pg_parse_empty(framed("2\0\0\0\4"), nil))
    -- A DataRow with two columns ("7" and NULL): framing alone gives the
    -- relay its length; nothing decodes the row.
    local row = msg("D", be16(2) .. be32(1) .. "7" .. be32(-1))
    local rc, m = frame(row .. "Z\0\0\0\5I")
    assert.are.equal(OK, rc)
    assert.are.equal(string.byte("D"), m.type)
    assert.are.equal(#row, tonumber(m.total))
  end)

  it("Authentication requests, byte for byte and parsed back", function()
    local a = ffi.new("sy_pg_auth")
    local function auth(bytes)
      local e = err_t()
      local rc = lib.sy__pg_parse_auth(framed(bytes), a, e)
      return rc, ffi.string(e.message)
    end
    local ok = "R\0\0\0\8\0\0\0\0"
    assert.are.equal(ok, built("sy__pg_build_auth_ok"))
    assert.are.equal(OK, (auth(ok)))
    assert.are.equal(0, a.code)
    local clear = "R\0\0\0\8\0\0\0\3"
    assert.are.equal(clear, built("sy__pg_build_auth_cleartext"))
    assert.are.equal(OK, (auth(clear)))
    assert.are.equal(3, a.code)
    local md5 = "R\0\0\0\12\0\0\0\5\1\2\3\4"
    assert.are.equal(md5, built("sy__pg_build_auth_md5", ffi.new("uint8_t[4]", { 1, 2, 3, 4 })))
    assert.are.equal(OK, (auth(md5)))
    assert.are.same({ 5, 1, 2, 3, 4 }, { a.code, a.salt[0], a.salt[1], a.salt[2], a.salt[3] })
    local sasl = "R\0\0\0\42\0\0\0\10SCRAM-SHA-256-PLUS\0SCRAM-SHA-256\0\0"
    assert.are.equal(sasl, built("sy__pg_build_auth_sasl", strings({ "SCRAM-SHA-256-PLUS", "SCRAM-SHA-256" })))
    assert.are.equal(OK, (auth(sasl)))
    assert.are.equal(10, a.code)
    local pos, s, mechs = ffi.new("size_t[1]"), ffi.new("sy_pg_span"), {}
    while lib.sy__pg_next_string(a.data, pos, s) == 1 do mechs[#mechs + 1] = sp(s) end
    assert.are.same({ "SCRAM-SHA-256-PLUS", "SCRAM-SHA-256" }, mechs)
    local cont = "R" .. be32(8 + 5) .. be32(11) .. "r=abc"
    assert.are.equal(cont, built("sy__pg_build_auth_sasl_continue", "r=abc", 5))
    assert.are.equal(OK, (auth(cont)))
    assert.are.equal("r=abc", sp(a.data))
    local final = "R" .. be32(8 + 5) .. be32(12) .. "v=xyz"
    assert.are.equal(final, built("sy__pg_build_auth_sasl_final", "v=xyz", 5))
    assert.are.equal(OK, (auth(final)))
    assert.are.equal(12, a.code)
    -- Damage.
    assert.are.equal(ERROR, (auth("R\0\0\0\8\0\0\0\5")))
    assert.are.equal(ERROR, (auth("R\0\0\0\9\0\0\0\0x")))
    assert.are.equal(ERROR, (auth("R\0\0\0\14\0\0\0\10SCRAM\0")))
    assert.are.equal(ERROR, (auth("R\0\0\0\6\0\0")))
    local rc, text = auth("R\0\0\0\8\0\0\0\7")
    assert.are.equal(ERROR, rc)
    assert.are.equal("unsupported authentication request 7", text)
    assert.are.equal(-1, (build("sy__pg_build_auth_sasl", strings({ "" }))))
  end)

  it("answers an SSLRequest with one byte", function()
    assert.are.equal("S", built("sy__pg_build_startup_reply", 1))
    assert.are.equal("N", built("sy__pg_build_startup_reply", 0))
  end)
end)

describe("builders", function()
  it("append whole messages after what the buffer holds", function()
    local b = ffi.new("sy_buf")
    lib.sy__buf_init(b)
    assert.are.equal(0, lib.sy__pg_build_parse(b, "", "SELECT 1", 8, 0, nil))
    assert.are.equal(0, lib.sy__pg_build_describe(b, string.byte("S"), ""))
    assert.are.equal(0, lib.sy__pg_build_sync(b))
    -- A refused message leaves the buffer as it was.
    local before = tonumber(b.len)
    assert.are.equal(-1, lib.sy__pg_build_parse(b, "", "SEL\0", 4, 0, nil))
    assert.are.equal(before, tonumber(b.len))
    local s = ffi.string(b.buf, b.len)
    lib.sy__buf_free(b)
    local types, rest = {}, s
    while #rest > 0 do
      local m = select(2, frame(rest))
      types[#types + 1] = string.char(m.type)
      rest = rest:sub(tonumber(m.total) + 1)
    end
    assert.are.same({ "P", "D", "S" }, types)
  end)
end)

-- ---- fuzzing ---------------------------------------------------------------

describe("fuzzing", function()
  local root = os.getenv("SWITCHYARD_ROOT") or "."
  local build_dir = os.getenv("SWITCHYARD_BUILD") or "build"
  if build_dir:sub(1, 1) ~= "/" then build_dir = root .. "/" .. build_dir end
  local dir = build_dir .. "/fuzz"
  local corpus = dir .. "/pgproto-corpus"

  local function sh(cmd)
    local ok, _, code = os.execute(cmd)
    if type(ok) == "number" then return ok == 0, ok / 256 end
    return ok == true, code
  end

  -- Seeds: one well-formed example of each message kind, so the fuzzer
  -- starts deep inside the parsers instead of guessing length words.
  local function seeds()
    assert(sh("mkdir -p " .. corpus))
    local b = be32(196608) .. str("user") .. str("alice") .. str("database") .. str("shop") .. "\0"
    local list = {
      be32(#b + 4) .. b,
      "\0\0\0\8\4\210\22\47",
      "\0\0\0\16\4\210\22\46" .. be32(1) .. be32(2),
      "Q\0\0\0\13SELECT 1\0S\0\0\0\4",
      msg("P", str("s1") .. str("SELECT $1") .. be16(1) .. be32(23)),
      msg("B", str("") .. str("s1") .. be16(1) .. be16(1) .. be16(2) .. be32(2) .. "42" .. be32(-1)
        .. be16(1) .. be16(1)),
      msg("D", "S" .. str("s1")) .. msg("E", str("") .. be32(0)) .. "H\0\0\0\4",
      msg("p", str("SCRAM-SHA-256") .. be32(3) .. "abc"),
      msg("E", "SERROR\0C42P01\0Mx\0\0") .. "Z\0\0\0\5I",
      "R\0\0\0\42\0\0\0\10SCRAM-SHA-256-PLUS\0SCRAM-SHA-256\0\0",
      "K\0\0\0\12" .. be32(1) .. be32(2),
    }
    for i, s in ipairs(list) do
      local f = assert(io.open(("%s/seed-%02d"):format(corpus, i), "wb"))
      f:write(s)
      f:close()
    end
  end

  it("replays the seeds through the plain build of the target", function()
    seeds()
    local bin = dir .. "/fuzz_pgproto_replay"
    assert.is_true(sh(("cc -std=c11 -D_GNU_SOURCE -Wall -Wextra -Werror -O1 -g -o %s %s/spec/support/fuzz_pgproto.c")
      :format(bin, root)), "the plain fuzz target does not build")
    assert.is_true(sh(("%s %s/seed-* >%s/replay.log 2>&1"):format(bin, corpus, dir)))
  end)

  it("survives a bounded libFuzzer run with ASan and UBSan", function()
    assert.is_true(sh("command -v clang >/dev/null 2>&1"),
      "clang is required for the libFuzzer run (apt-get install -y clang)")
    seeds()
    local bin = dir .. "/fuzz_pgproto"
    local log = dir .. "/fuzz_pgproto.log"
    assert.is_true(sh(("clang -std=c11 -D_GNU_SOURCE -Wall -Wextra -Werror -g -O1 -DSY_FUZZ_LIBFUZZER"
      .. " -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=undefined"
      .. " -o %s %s/spec/support/fuzz_pgproto.c >%s 2>&1"):format(bin, root, log)),
      "the libFuzzer target does not build: see " .. log)
    -- LD_PRELOAD (a sanitizer build of the specs) must not reach a
    -- program that links its own sanitizer runtime.
    local ok, code = sh(("env -u LD_PRELOAD ASAN_OPTIONS=detect_leaks=1 %s -max_total_time=20 -timeout=10"
      .. " -rss_limit_mb=1024 -max_len=4096 -artifact_prefix=%s/ %s >>%s 2>&1")
      :format(bin, dir, corpus, log))
    assert.is_true(ok, ("libFuzzer exited with %s: see %s"):format(tostring(code), log))
  end)
end)

-- The proxy's backend connection (core/relay_conn.c) against a real
-- PostgreSQL 15: libpq connects, the cancel key is read from libpq's trace,
-- then the protocol is spoken by hand over the raw transport (plain TCP,
-- a Unix socket, and TLS with sslmode=require), and a CancelRequest sent by
-- the libev-driven sender stops a running pg_sleep.
local sy = require("support.ffi")
local cluster = require("support.cluster")
local ffi, lib = sy.ffi, sy.lib
local bit = require("bit")

sy.cdef_internal("relay_conn")
ffi.cdef([[
struct pollfd { int fd; short events; short revents; };
int poll(struct pollfd *fds, unsigned long nfds, int timeout);
]])

local POLLIN, POLLOUT = 1, 4
local WANT_READ, WANT_WRITE = lib.SY_RELAY_WANT_READ, lib.SY_RELAY_WANT_WRITE

local function be32(n)
  return string.char(bit.band(bit.rshift(n, 24), 255), bit.band(bit.rshift(n, 16), 255),
    bit.band(bit.rshift(n, 8), 255), bit.band(n, 255))
end
local function get32(s, i)
  local a, b, c, d = s:byte(i, i + 3)
  return bit.tobit(bit.bor(bit.lshift(a, 24), bit.lshift(b, 16), bit.lshift(c, 8), d))
end
local function get16(s, i)
  local a, b = s:byte(i, i + 1)
  return a * 256 + b
end

local function wait(rc, want, deadline)
  local p = ffi.new("struct pollfd[1]")
  p[0].fd = lib.sy__relay_fd(rc)
  p[0].events = want == WANT_READ and POLLIN or POLLOUT
  local ms = math.floor((deadline - cluster.now()) * 1000)
  assert(ms > 0, "timed out waiting on the relay connection")
  ffi.C.poll(p, 1, ms)
end

local function write_all(rc, data, timeout)
  local deadline = cluster.now() + (timeout or 10)
  local off = 0
  while off < #data do
    local n = tonumber(lib.sy__relay_write(rc, ffi.cast("const char *", data) + off, #data - off))
    if n > 0 then
      off = off + n
    elseif n == WANT_READ or n == WANT_WRITE then
      wait(rc, n, deadline)
    else
      error("relay write failed: " .. ffi.string(lib.sy__relay_error(rc)))
    end
  end
end

-- Reads messages until ReadyForQuery; returns them as {type=, body=}.
local function read_until_ready(rc, timeout)
  local deadline = cluster.now() + (timeout or 10)
  local buf, msgs = "", {}
  local chunk = ffi.new("char[?]", 8192)
  while true do
    -- Drain whole messages first.
    while #buf >= 5 do
      local len = get32(buf, 2)
      if #buf < 1 + len then break end
      local m = { type = buf:sub(1, 1), body = buf:sub(6, 1 + len) }
      msgs[#msgs + 1] = m
      buf = buf:sub(2 + len)
      if m.type == "Z" then
        assert(#buf == 0, "bytes after ReadyForQuery")
        return msgs
      end
    end
    local n = tonumber(lib.sy__relay_read(rc, chunk, 8192))
    if n > 0 then
      buf = buf .. ffi.string(chunk, n)
    elseif n == WANT_READ or n == WANT_WRITE then
      -- TLS: only wait once OpenSSL holds nothing decrypted.
      assert(lib.sy__relay_pending(rc) == 0)
      wait(rc, n, deadline)
    elseif n == 0 then
      error("server closed the connection")
    else
      error("relay read failed: " .. ffi.string(lib.sy__relay_error(rc)))
    end
  end
end

local function query(rc, sql, timeout)
  write_all(rc, "Q" .. be32(4 + #sql + 1) .. sql .. "\0")
  return read_until_ready(rc, timeout)
end

local function first_value(msgs)
  for _, m in ipairs(msgs) do
    if m.type == "D" then
      assert(get16(m.body, 1) == 1)
      local len = get32(m.body, 3)
      return m.body:sub(7, 6 + len)
    end
  end
end

local function sqlstate(msgs)
  for _, m in ipairs(msgs) do
    if m.type == "E" then return m.body:match("C(%w+)%z") end
  end
end

local function types(msgs)
  local t = {}
  for i, m in ipairs(msgs) do t[i] = m.type end
  return table.concat(t)
end

local function connect(conninfo)
  local err = ffi.new("char[256]")
  local rc = lib.sy__relay_test_connect(conninfo, 10, err, 256)
  assert(rc ~= nil, "connect failed: " .. ffi.string(err))
  return ffi.gc(rc, lib.sy__relay_close)
end

local function close(rc)
  lib.sy__relay_close(ffi.gc(rc, nil))
end

-- Makes a self-signed certificate PostgreSQL accepts; nil when openssl fails.
local function make_cert()
  local dir = os.tmpname()
  os.remove(dir)
  local q = cluster.quote
  local cmd = "mkdir -p " .. q(dir) .. " && chmod 755 " .. q(dir)
    .. " && openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj /CN=localhost"
    .. " -keyout " .. q(dir .. "/server.key") .. " -out " .. q(dir .. "/server.crt") .. " >/dev/null 2>&1"
    .. " && chmod 600 " .. q(dir .. "/server.key")
  local uid = io.popen("id -u"):read("*l")
  if uid == "0" then
    cmd = cmd .. " && chown postgres:postgres " .. q(dir .. "/server.key") .. " " .. q(dir .. "/server.crt")
  end
  local rc = os.execute(cmd) -- LuaJIT: the wait status, 0 on success
  if rc ~= 0 and rc ~= true then return nil, dir end
  return { dir = dir, cert = dir .. "/server.crt", key = dir .. "/server.key" }, dir
end

describe("relay connection", function()
  local bed, node, cert

  setup(function()
    local dir
    cert, dir = make_cert()
    assert(cert, "openssl could not make a test certificate in " .. tostring(dir))
    bed = cluster.start{ clusters = { { name = "main", replicas = 0, settings = {
      ssl = true, ssl_cert_file = cert.cert, ssl_key_file = cert.key } } } }
    node = bed.clusters.main.primary
  end)

  teardown(function()
    if bed then bed:teardown() end
    if cert and cert.dir then os.execute("rm -rf " .. cluster.quote(cert.dir)) end
  end)

  local function check_key_and_query(rc)
    local pid, key = ffi.new("uint32_t[1]"), ffi.new("uint32_t[1]")
    assert.equal(1, lib.sy__relay_cancel_key(rc, pid, key))
    local backend = lib.sy__relay_backend_pid(rc)
    assert.is_true(backend > 0)
    assert.equal(backend, tonumber(pid[0]))
    local msgs = query(rc, "SELECT pg_backend_pid()")
    assert.equal("TDCZ", types(msgs))
    assert.equal(tostring(backend), first_value(msgs))
    assert.equal("I", msgs[#msgs].body)
  end

  local function cancel_sleep(rc)
    local sql = "SELECT pg_sleep(30)"
    write_all(rc, "Q" .. be32(4 + #sql + 1) .. sql .. "\0")
    -- Let the backend start sleeping, then cancel through the libev sender.
    cluster.sleep(0.2)
    local t0 = cluster.now()
    assert.equal(0, lib.sy__relay_test_cancel(rc, 5))
    local msgs = read_until_ready(rc, 10)
    assert.is_true(cluster.now() - t0 < 5, "the cancel took too long")
    assert.equal("57014", sqlstate(msgs))
    -- Still usable.
    local again = query(rc, "SELECT 1")
    assert.equal("1", first_value(again))
  end

  it("captures the cancel key on a plain TCP connection and relays raw bytes", function()
    local rc = connect(node.conninfo .. " sslmode=disable")
    assert.equal(0, lib.sy__relay_tls(rc))
    check_key_and_query(rc)
    assert.equal("127.0.0.1:" .. node.port, ffi.string(lib.sy__relay_cancel_address(rc)))
    close(rc)
  end)

  it("cancels a running query with the captured key (plain)", function()
    local rc = connect(node.conninfo .. " sslmode=disable")
    cancel_sleep(rc)
    close(rc)
  end)

  it("works over a Unix socket, cancel included", function()
    local rc = connect(string.format("host=%s port=%d dbname=postgres user=postgres",
      bed.sockdir, node.port))
    check_key_and_query(rc)
    assert.equal(bed.sockdir .. "/.s.PGSQL." .. node.port,
      ffi.string(lib.sy__relay_cancel_address(rc)))
    cancel_sleep(rc)
    close(rc)
  end)

  it("reports a failed connect with libpq's reason", function()
    local err = ffi.new("char[256]")
    local rc = lib.sy__relay_test_connect("host=127.0.0.1 port=1 dbname=postgres user=postgres",
      5, err, 256)
    assert.is_true(rc == nil)
    assert.matches("refused", ffi.string(err))
  end)

  it("does the same over TLS (sslmode=require)", function()
    local rc = connect(node.conninfo .. " sslmode=require")
    assert.equal(1, lib.sy__relay_tls(rc))
    check_key_and_query(rc)
    cancel_sleep(rc)
    -- A result bigger than one TLS record: reading must drain OpenSSL.
    local msgs = query(rc, "SELECT repeat('x', 100000)")
    assert.equal(100000, #first_value(msgs))
    close(rc)
  end)
end)

-- The proxy's client-facing TLS layer (core/tls.c): a server stream on one
-- end of a non-blocking socketpair, a real OpenSSL client (through the FFI)
-- on the other, stepped alternately.  A throwaway self-signed certificate
-- is made with the openssl command line.
local sy = require("support.ffi")
local ffi, lib = sy.ffi, sy.lib

sy.cdef_internal("tls")
ffi.cdef([[
int socketpair(int domain, int type, int protocol, int sv[2]);
int fcntl(int fd, int cmd, ...);
int close(int fd);
long write(int fd, const void *buf, unsigned long n);
typedef struct ssl_ctx_st SSL_CTX;
typedef struct ssl_st SSL;
typedef struct ssl_method_st SSL_METHOD;
const SSL_METHOD *TLS_client_method(void);
SSL_CTX *SSL_CTX_new(const SSL_METHOD *method);
void SSL_CTX_free(SSL_CTX *ctx);
int SSL_CTX_load_verify_locations(SSL_CTX *ctx, const char *file, const char *path);
void SSL_CTX_set_verify(SSL_CTX *ctx, int mode, void *cb);
int SSL_CTX_use_certificate_file(SSL_CTX *ctx, const char *file, int type);
int SSL_CTX_use_PrivateKey_file(SSL_CTX *ctx, const char *file, int type);
SSL *SSL_new(SSL_CTX *ctx);
void SSL_free(SSL *ssl);
int SSL_set_fd(SSL *ssl, int fd);
void SSL_set_connect_state(SSL *ssl);
int SSL_do_handshake(SSL *ssl);
int SSL_read(SSL *ssl, void *buf, int num);
int SSL_write(SSL *ssl, const void *buf, int num);
int SSL_get_error(const SSL *ssl, int ret);
int SSL_shutdown(SSL *ssl);
long SSL_ctrl(SSL *ssl, int cmd, long larg, void *parg);
long SSL_get_verify_result(const SSL *ssl);
]])
local ssl = ffi.load("ssl")
local bit = require("bit")

local AF_UNIX, SOCK_STREAM, F_GETFL, F_SETFL, O_NONBLOCK = 1, 1, 3, 4, 2048
local SSL_FILETYPE_PEM, SSL_VERIFY_PEER = 1, 1
local SSL_CTRL_MODE, SSL_MODE_ENABLE_PARTIAL_WRITE = 33, 1
local SSL_ERROR_WANT_READ, SSL_ERROR_WANT_WRITE, SSL_ERROR_ZERO_RETURN = 2, 3, 6
local DONE, WANT_READ, WANT_WRITE, FAILED =
  lib.SY_TLS_DONE, lib.SY_TLS_WANT_READ, lib.SY_TLS_WANT_WRITE, lib.SY_TLS_FAILED

local function sh(cmd)
  local ok = os.execute(cmd .. " >/dev/null 2>&1")
  assert(ok == true or ok == 0, "failed: " .. cmd)
end

local dir, cert, key, other_key
local client_ctx

local function nonblocking_pair()
  local sv = ffi.new("int[2]")
  assert(ffi.C.socketpair(AF_UNIX, SOCK_STREAM, 0, sv) == 0)
  for i = 0, 1 do
    local fl = ffi.C.fcntl(sv[i], F_GETFL)
    assert(ffi.C.fcntl(sv[i], F_SETFL, ffi.cast("int", bit.bor(fl, O_NONBLOCK))) == 0)
  end
  return sv[0], sv[1]
end

-- A server stream and a client SSL on a fresh socketpair; every test
-- closes them through the returned cleanup.
local function open_pair()
  local srv = lib.sy__tls_server_new(cert, key, nil, nil, 0)
  assert(srv ~= nil)
  local sfd, cfd = nonblocking_pair()
  local err = ffi.new("char[256]")
  local st = lib.sy__tls_stream_new(srv, sfd, 0, err, 256)
  assert(st ~= nil, ffi.string(err))
  lib.sy__tls_server_free(srv) -- the stream keeps its own reference
  local cl = ssl.SSL_new(client_ctx)
  assert(ssl.SSL_set_fd(cl, cfd) == 1)
  ssl.SSL_set_connect_state(cl)
  ssl.SSL_ctrl(cl, SSL_CTRL_MODE, SSL_MODE_ENABLE_PARTIAL_WRITE, nil)
  local p = { st = st, cl = cl, sfd = sfd, cfd = cfd }
  function p.close()
    lib.sy__tls_stream_free(p.st)
    ssl.SSL_free(p.cl)
    ffi.C.close(p.sfd)
    if p.cfd >= 0 then ffi.C.close(p.cfd) end
  end
  return p
end

local function handshake(p)
  local s, c
  for _ = 1, 100 do
    s = lib.sy__tls_handshake(p.st)
    if c ~= 1 then c = ssl.SSL_do_handshake(p.cl) end
    if s == DONE and c == 1 then return end
    assert(s ~= FAILED, ffi.string(lib.sy__tls_error(p.st)))
    if c ~= 1 then
      local e = ssl.SSL_get_error(p.cl, c)
      assert(e == SSL_ERROR_WANT_READ or e == SSL_ERROR_WANT_WRITE, "client handshake error " .. e)
    end
  end
  error("handshake did not finish")
end

-- Moves `data` from a writer to a reader, stepping both, byte-exact.
local function transfer(write, read, data)
  local out, got, off, rbuf = {}, 0, 0, ffi.new("uint8_t[16384]")
  for _ = 1, 100000 do
    if off < #data then
      local n = write(data:sub(off + 1, off + 65536))
      if n > 0 then off = off + n end
    end
    local n = read(rbuf, 16384)
    if n > 0 then
      out[#out + 1] = ffi.string(rbuf, n)
      got = got + n
    end
    if got >= #data then break end
  end
  return table.concat(out)
end

local function server_writer(p)
  return function(s)
    local n = tonumber(lib.sy__tls_write(p.st, s, #s))
    assert(n > 0 or n == WANT_READ or n == WANT_WRITE, ffi.string(lib.sy__tls_error(p.st)))
    return n
  end
end
local function server_reader(p)
  return function(buf, cap)
    local n = tonumber(lib.sy__tls_read(p.st, buf, cap))
    assert(n > 0 or n == WANT_READ or n == WANT_WRITE, ffi.string(lib.sy__tls_error(p.st)))
    return n
  end
end
-- A client-side OpenSSL call that may only block, never fail.
local function client_io(p, n, what)
  if n <= 0 then
    local e = ssl.SSL_get_error(p.cl, n)
    assert(e == SSL_ERROR_WANT_READ or e == SSL_ERROR_WANT_WRITE, "client " .. what .. " error " .. e)
  end
  return n
end
local function client_writer(p)
  return function(s) return client_io(p, ssl.SSL_write(p.cl, s, #s), "write") end
end
local function client_reader(p)
  return function(buf, cap) return client_io(p, ssl.SSL_read(p.cl, buf, cap), "read") end
end

local function random_bytes(n)
  local t = {}
  for i = 1, n do t[i] = string.char(math.random(0, 255)) end
  return table.concat(t)
end

describe("client-facing TLS (core/tls.c)", function()
  setup(function()
    dir = os.tmpname()
    os.remove(dir)
    sh("mkdir -p " .. dir)
    cert, key, other_key = dir .. "/cert.pem", dir .. "/key.pem", dir .. "/other.pem"
    sh("openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes" ..
      " -keyout " .. key .. " -out " .. cert .. " -days 2 -subj /CN=localhost")
    sh("openssl genpkey -algorithm ec -pkeyopt ec_paramgen_curve:prime256v1 -out " .. other_key)
    client_ctx = ssl.SSL_CTX_new(ssl.TLS_client_method())
    -- The client checks the server's certificate against itself.
    assert(ssl.SSL_CTX_load_verify_locations(client_ctx, cert, nil) == 1)
    ssl.SSL_CTX_set_verify(client_ctx, SSL_VERIFY_PEER, nil)
    math.randomseed(42)
  end)

  teardown(function()
    if client_ctx ~= nil then ssl.SSL_CTX_free(client_ctx) end
    if dir then os.execute("rm -rf " .. dir) end
  end)

  describe("server context", function()
    it("loads a matching certificate and key, with and without a CA", function()
      local err = ffi.new("char[256]")
      local srv = lib.sy__tls_server_new(cert, key, nil, err, 256)
      assert.is_true(srv ~= nil, ffi.string(err))
      lib.sy__tls_server_free(srv)
      srv = lib.sy__tls_server_new(cert, key, cert, err, 256)
      assert.is_true(srv ~= nil, ffi.string(err))
      lib.sy__tls_server_free(srv)
      lib.sy__tls_server_free(nil)
    end)

    it("refuses a key that does not match the certificate, naming both files", function()
      local err = ffi.new("char[256]")
      local srv = lib.sy__tls_server_new(cert, other_key, nil, err, 256)
      assert.is_true(srv == nil)
      local msg = ffi.string(err)
      assert.matches("does not match", msg, 1, true)
      assert.matches(other_key, msg, 1, true)
      assert.matches(cert, msg, 1, true)
    end)

    it("names a missing or unreadable file", function()
      local err = ffi.new("char[256]")
      assert.is_true(lib.sy__tls_server_new(dir .. "/nope.pem", key, nil, err, 256) == nil)
      assert.matches(dir .. "/nope.pem", ffi.string(err), 1, true)
      assert.is_true(lib.sy__tls_server_new(cert, dir .. "/nokey.pem", nil, err, 256) == nil)
      assert.matches(dir .. "/nokey.pem", ffi.string(err), 1, true)
      assert.is_true(lib.sy__tls_server_new(cert, cert, nil, err, 256) == nil) -- a cert is no key
      assert.matches("key file", ffi.string(err), 1, true)
      assert.is_true(lib.sy__tls_server_new(cert, key, key, err, 256) == nil) -- a key is no CA
      assert.matches("CA file", ffi.string(err), 1, true)
    end)
  end)

  describe("stream", function()
    local p
    after_each(function()
      if p then p.close() end
      p = nil
    end)

    it("handshakes with a verifying client at TLS 1.2 or later", function()
      p = open_pair()
      assert.equals("", ffi.string(lib.sy__tls_version(p.st)))
      handshake(p)
      assert.equals(DONE, lib.sy__tls_handshake(p.st)) -- DONE stays DONE
      assert.equals(0, tonumber(ssl.SSL_get_verify_result(p.cl)))
      assert.matches("^TLSv1%.[23]$", ffi.string(lib.sy__tls_version(p.st)))
      assert.equals(0, lib.sy__tls_peer_verified(p.st))
      assert.equals("", ffi.string(lib.sy__tls_error(p.st)))
    end)

    it("refuses I/O before the handshake is done", function()
      p = open_pair()
      local buf = ffi.new("char[8]")
      assert.equals(FAILED, tonumber(lib.sy__tls_read(p.st, buf, 8)))
      assert.equals(FAILED, tonumber(lib.sy__tls_write(p.st, "x", 1)))
    end)

    it("reports WANT_READ when nothing has arrived", function()
      p = open_pair()
      assert.equals(WANT_READ, lib.sy__tls_handshake(p.st))
      handshake(p)
      local buf = ffi.new("char[8]")
      assert.equals(WANT_READ, tonumber(lib.sy__tls_read(p.st, buf, 8)))
    end)

    it("exchanges data both ways, byte-exact, including 200 KB", function()
      p = open_pair()
      handshake(p)
      assert.equals("SELECT 1", transfer(client_writer(p), server_reader(p), "SELECT 1"))
      assert.equals("result", transfer(server_writer(p), client_reader(p), "result"))
      local big = random_bytes(200 * 1024)
      local got = transfer(server_writer(p), client_reader(p), big)
      assert.equals(#big, #got)
      assert.is_true(got == big, "server-to-client payload differs")
      got = transfer(client_writer(p), server_reader(p), big)
      assert.equals(#big, #got)
      assert.is_true(got == big, "client-to-server payload differs")
    end)

    it("reports bytes OpenSSL already decrypted through pending()", function()
      p = open_pair()
      handshake(p)
      local msg = random_bytes(1000)
      assert.equals(1000, ssl.SSL_write(p.cl, msg, 1000))
      local buf = ffi.new("uint8_t[10]")
      assert.equals(10, tonumber(lib.sy__tls_read(p.st, buf, 10)))
      assert.equals(990, lib.sy__tls_pending(p.st))
      local parts = { ffi.string(buf, 10) }
      local big = ffi.new("uint8_t[4096]")
      while lib.sy__tls_pending(p.st) > 0 do
        local n = tonumber(lib.sy__tls_read(p.st, big, 4096))
        assert.is_true(n > 0)
        parts[#parts + 1] = ffi.string(big, n)
      end
      assert.equals(msg, table.concat(parts))
      assert.equals(WANT_READ, tonumber(lib.sy__tls_read(p.st, big, 4096)))
    end)

    it("ends in order: the client's close_notify reads as 0", function()
      p = open_pair()
      handshake(p)
      assert.is_true(ssl.SSL_shutdown(p.cl) >= 0)
      local buf = ffi.new("char[64]")
      assert.equals(0, tonumber(lib.sy__tls_read(p.st, buf, 64)))
      assert.equals("", ffi.string(lib.sy__tls_error(p.st)))
    end)

    it("ends in order: the server's shutdown reaches the client as a clean EOF", function()
      p = open_pair()
      handshake(p)
      assert.equals(DONE, lib.sy__tls_shutdown(p.st))
      local buf = ffi.new("char[64]")
      local n = ssl.SSL_read(p.cl, buf, 64)
      assert.equals(0, n)
      assert.equals(SSL_ERROR_ZERO_RETURN, ssl.SSL_get_error(p.cl, n))
    end)

    it("fails a read when the client vanishes without close_notify", function()
      p = open_pair()
      handshake(p)
      ffi.C.close(p.cfd)
      p.cfd = -1
      local buf = ffi.new("char[64]")
      assert.equals(FAILED, tonumber(lib.sy__tls_read(p.st, buf, 64)))
      assert.matches("^TLS read: ", ffi.string(lib.sy__tls_error(p.st)))
      assert.equals(FAILED, tonumber(lib.sy__tls_read(p.st, buf, 64)))
      assert.equals(FAILED, lib.sy__tls_shutdown(p.st))
    end)

    it("fails a write to a client that is gone, without SIGPIPE", function()
      p = open_pair()
      handshake(p)
      ffi.C.close(p.cfd)
      p.cfd = -1
      local r = tonumber(lib.sy__tls_write(p.st, "after", 5))
      for _ = 1, 3 do -- the first record may still fit before the error shows
        if r == FAILED then break end
        r = tonumber(lib.sy__tls_write(p.st, "after", 5))
      end
      assert.equals(FAILED, r)
      assert.matches("^TLS write: ", ffi.string(lib.sy__tls_error(p.st)))
    end)

    it("fails the handshake, with OpenSSL's reason, on garbage instead of a ClientHello", function()
      p = open_pair()
      local junk = "GET / HTTP/1.1\r\nHost: x\r\n\r\n" .. random_bytes(200)
      assert.equals(#junk, tonumber(ffi.C.write(p.cfd, junk, #junk)))
      local r = lib.sy__tls_handshake(p.st)
      assert.equals(FAILED, r)
      local msg = ffi.string(lib.sy__tls_error(p.st))
      assert.matches("^TLS handshake: .+", msg)
      assert.equals(FAILED, lib.sy__tls_handshake(p.st)) -- stays failed
    end)

    it("fails the handshake, with a reason, on a second SSLRequest", function()
      p = open_pair()
      local req = "\0\0\0\8\4\210\22\47"
      assert.equals(8, tonumber(ffi.C.write(p.cfd, req, 8)))
      assert.equals(FAILED, lib.sy__tls_handshake(p.st))
      assert.matches("^TLS handshake: .+", ffi.string(lib.sy__tls_error(p.st)))
    end)

    it("fails the handshake when the client hangs up first", function()
      p = open_pair()
      ffi.C.close(p.cfd)
      p.cfd = -1
      assert.equals(FAILED, lib.sy__tls_handshake(p.st))
      assert.matches("^TLS handshake: .+", ffi.string(lib.sy__tls_error(p.st)))
    end)

    it("verifies a client certificate against the CA when one is presented", function()
      local err = ffi.new("char[256]")
      local srv = lib.sy__tls_server_new(cert, key, cert, err, 256)
      assert.is_true(srv ~= nil, ffi.string(err))
      local cctx = ssl.SSL_CTX_new(ssl.TLS_client_method())
      assert.equals(1, ssl.SSL_CTX_use_certificate_file(cctx, cert, SSL_FILETYPE_PEM))
      assert.equals(1, ssl.SSL_CTX_use_PrivateKey_file(cctx, key, SSL_FILETYPE_PEM))
      local sfd, cfd = nonblocking_pair()
      local st = lib.sy__tls_stream_new(srv, sfd, 0, err, 256)
      lib.sy__tls_server_free(srv)
      local cl = ssl.SSL_new(cctx)
      ssl.SSL_CTX_free(cctx) -- the SSL keeps its own reference
      ssl.SSL_set_fd(cl, cfd)
      ssl.SSL_set_connect_state(cl)
      p = { st = st, cl = cl, sfd = sfd, cfd = cfd }
      p.close = function()
        lib.sy__tls_stream_free(p.st)
        ssl.SSL_free(p.cl)
        ffi.C.close(p.sfd)
        ffi.C.close(p.cfd)
      end
      handshake(p)
      -- TLS 1.3 sends the client's certificate with its Finished: one
      -- server read processes it.
      local buf = ffi.new("char[8]")
      lib.sy__tls_read(p.st, buf, 8)
      assert.equals(1, lib.sy__tls_peer_verified(p.st))
    end)
  end)

  describe("plaintext received before the handshake (CVE-2021-23214)", function()
    it("is refused: the stream is not created and the reason says why", function()
      local srv = lib.sy__tls_server_new(cert, key, nil, nil, 0)
      assert.is_true(srv ~= nil)
      local err = ffi.new("char[256]")
      local st = lib.sy__tls_stream_new(srv, 0, 13, err, 256)
      assert.is_true(st == nil)
      assert.matches("13 unencrypted bytes", ffi.string(err), 1, true)
      assert.matches("refusing", ffi.string(err), 1, true)
      lib.sy__tls_server_free(srv)
      assert.equals(1, lib.sy__tls_plaintext_injected(1))
      assert.equals(0, lib.sy__tls_plaintext_injected(0))
    end)
  end)
end)

-- The proxy's password authentication (core/auth*.c), server side: the
-- userlist.txt table, md5 and SCRAM-SHA-256.  The C functions are called
-- through the FFI; the client side of each method is written here with
-- libcrypto so the exchange is checked end to end: against RFC 7677's
-- example, and against secrets a real PostgreSQL 15 produced.
local sy = require("support.ffi")
local ffi, lib = sy.ffi, sy.lib
local bit = require("bit")

sy.cdef_internal("auth")
ffi.cdef([[
typedef struct evp_md_st EVP_MD;
const EVP_MD *EVP_sha256(void);
const EVP_MD *EVP_md5(void);
unsigned char *HMAC(const EVP_MD *md, const void *key, int key_len,
                    const unsigned char *d, size_t n, unsigned char *out, unsigned int *out_len);
int EVP_Digest(const void *data, size_t count, unsigned char *md, unsigned int *size,
               const EVP_MD *type, void *impl);
int PKCS5_PBKDF2_HMAC(const char *pass, int passlen, const unsigned char *salt, int saltlen,
                      int iter, const EVP_MD *digest, int keylen, unsigned char *out);
int EVP_EncodeBlock(unsigned char *t, const unsigned char *f, int n);
int EVP_DecodeBlock(unsigned char *t, const unsigned char *f, int n);
]])
local crypto = ffi.load("crypto")

---------------------------------------------------------------------------
-- The client side, with libcrypto.
---------------------------------------------------------------------------
local function b64enc(s)
  local out = ffi.new("unsigned char[?]", 4 * math.ceil(#s / 3) + 1)
  local n = crypto.EVP_EncodeBlock(out, s, #s)
  return ffi.string(out, n)
end

local function b64dec(s)
  local out = ffi.new("unsigned char[?]", #s)
  local n = crypto.EVP_DecodeBlock(out, s, #s)
  assert(n >= 0, "bad base64")
  local pad = #(s:match("=*$"))
  return ffi.string(out, n - pad)
end

local function hmac(key, data)
  local out = ffi.new("unsigned char[32]")
  local len = ffi.new("unsigned int[1]")
  assert(crypto.HMAC(crypto.EVP_sha256(), key, #key, data, #data, out, len) ~= nil)
  return ffi.string(out, 32)
end

local function digest(md, data)
  local out = ffi.new("unsigned char[64]")
  local len = ffi.new("unsigned int[1]")
  assert(crypto.EVP_Digest(data, #data, out, len, md, nil) == 1)
  return ffi.string(out, len[0])
end
local function sha256(s) return digest(crypto.EVP_sha256(), s) end
local function md5hex(s)
  return (digest(crypto.EVP_md5(), s):gsub(".", function(c) return ("%02x"):format(c:byte()) end))
end

local function pbkdf2(password, salt, iter)
  local out = ffi.new("unsigned char[32]")
  assert(crypto.PKCS5_PBKDF2_HMAC(password, #password, salt, #salt, iter,
    crypto.EVP_sha256(), 32, out) == 1)
  return ffi.string(out, 32)
end

local function xor(a, b)
  local t = {}
  for i = 1, #a do t[i] = string.char(bit.bxor(a:byte(i), b:byte(i))) end
  return table.concat(t)
end

---------------------------------------------------------------------------
-- Wrappers around the C side.
---------------------------------------------------------------------------
local MOCK = ffi.new("uint8_t[32]")
assert(lib.sy__auth_mock_key_init(MOCK) == 0)

local function scram_new(user, secret, key)
  local pp = ffi.new("sy_scram *[1]")
  local rc = lib.sy__scram_new(user, secret, key or MOCK, pp)
  assert.are.equal(0, rc)
  return ffi.gc(pp[0], lib.sy__scram_free)
end

local function step(s, msg)
  local out = ffi.new("const char *[1]")
  local len = ffi.new("size_t[1]")
  local rc = lib.sy__scram_step(s, msg, #msg, out, len)
  local text = out[0] ~= nil and ffi.string(out[0], len[0]) or nil
  return rc, text
end

-- Runs a whole exchange as a client that knows `password`; returns the
-- final step's code, the server messages and the server signature the
-- client expects.
local function client_login(s, user, password, opts)
  opts = opts or {}
  local gs2 = opts.gs2 or "n,,"
  local cfb = "n=" .. user .. ",r=" .. (opts.cnonce or "fyko+d2lbbFgONRv9qkxdawL")
  local rc, sfirst = step(s, gs2 .. cfb)
  assert.are.equal(lib.SY_AUTH_CONTINUE, rc, lib.sy__scram_detail(s) ~= nil
    and ffi.string(lib.sy__scram_detail(s)))
  local nonce, salt64, iter = sfirst:match("^r=([^,]+),s=([^,]+),i=(%d+)$")
  assert.is_truthy(nonce, sfirst)
  local salted = pbkdf2(password, b64dec(salt64), tonumber(iter))
  local client_key = hmac(salted, "Client Key")
  local without = "c=" .. b64enc(gs2) .. ",r=" .. nonce
  local am = cfb .. "," .. sfirst .. "," .. without
  local proof = xor(client_key, hmac(sha256(client_key), am))
  local rc2, sfinal = step(s, without .. ",p=" .. b64enc(proof))
  local expect = "v=" .. b64enc(hmac(hmac(salted, "Server Key"), am))
  return rc2, sfirst, sfinal, expect
end

local function detail(s) return ffi.string(lib.sy__scram_detail(s)) end

local function parse(text, name)
  local pp = ffi.new("sy_authfile *[1]")
  local err = ffi.new("char[256]")
  local rc = lib.sy__authfile_parse(text, #text, name or "userlist.txt", pp, err, 256)
  local af = pp[0] ~= nil and ffi.gc(pp[0], lib.sy__authfile_free) or nil
  return rc, af, ffi.string(err)
end

local function md5_response(user, password, salt)
  return "md5" .. md5hex(md5hex(password .. user) .. salt)
end

local function md5_verify(user, secret, salt, resp)
  local why = ffi.new("const char *[1]")
  local rc = lib.sy__md5_verify(user, secret, salt, resp, #resp, MOCK, why)
  return rc, why[0] ~= nil and ffi.string(why[0]) or nil
end

---------------------------------------------------------------------------
describe("auth: SCRAM-SHA-256", function()
  it("reproduces the RFC 7677 example exchange", function()
    local secret = ffi.new("char[256]")
    local salt = b64dec("W22ZaJ0SNY7soEsUEjb6gQ==")
    assert.are.equal(0, lib.sy__scram_build_secret("pencil", salt, #salt, 4096, secret, 256))
    assert.are.equal(lib.SY_SECRET_SCRAM, lib.sy__auth_secret_kind(secret))
    local s = scram_new("user", secret)
    assert.are.equal(0, lib.sy__scram_set_server_nonce(s, "%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0"))
    local rc, out = step(s, "n,,n=user,r=rOprNGfwEbeRWgbNEkqO")
    assert.are.equal(lib.SY_AUTH_CONTINUE, rc)
    assert.are.equal("r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,"
      .. "s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096", out)
    rc, out = step(s, "c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,"
      .. "p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=")
    assert.are.equal(lib.SY_AUTH_OK, rc)
    assert.are.equal("v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=", out)
    -- The exchange is over: a third message is a state error.
    assert.are.equal(lib.SY_AUTH_ESTATE, (step(s, "c=biws")))
  end)

  it("offers only SCRAM-SHA-256 and refuses -PLUS and others clearly", function()
    local len = ffi.new("size_t[1]")
    local list = lib.sy__scram_mechanisms(len)
    assert.are.equal("SCRAM-SHA-256\0\0", ffi.string(list, len[0]))
    assert.are.equal(lib.SY_AUTH_OK, lib.sy__scram_check_mechanism("SCRAM-SHA-256"))
    assert.are.equal(lib.SY_AUTH_ECHANNEL, lib.sy__scram_check_mechanism("SCRAM-SHA-256-PLUS"))
    assert.are.equal(lib.SY_AUTH_EMECH, lib.sy__scram_check_mechanism("SCRAM-SHA-1"))
    assert.are.equal(lib.SY_AUTH_EMECH, lib.sy__scram_check_mechanism(nil))
    assert.are.equal("0A000", ffi.string(lib.sy__auth_sqlstate(lib.SY_AUTH_ECHANNEL)))
  end)

  it("logs in with a plain-password secret, gs2 'n' and 'y', random nonces", function()
    for _, gs2 in ipairs({ "n,,", "y,," }) do
      local s = scram_new("carol", "s3cr3t pass")
      local rc, sfirst, sfinal, expect = client_login(s, "carol", "s3cr3t pass", { gs2 = gs2 })
      assert.are.equal(lib.SY_AUTH_OK, rc)
      assert.are.equal(expect, sfinal)
      -- 18 random bytes of server nonce after the client's, like PostgreSQL.
      assert.are.equal(24 + 24, #sfirst:match("^r=([^,]+)"))
    end
  end)

  it("refuses a wrong password with EFAILED and no server-final", function()
    local s = scram_new("carol", "right")
    local rc, _, sfinal = client_login(s, "carol", "wrong")
    assert.are.equal(lib.SY_AUTH_EFAILED, rc)
    assert.is_nil(sfinal)
    assert.are.equal("wrong password", detail(s))
    assert.are.equal("28P01", ffi.string(lib.sy__auth_sqlstate(rc)))
    assert.are.equal(lib.SY_AUTH_ESTATE, (step(s, "anything")))
  end)

  it("runs a mock exchange for unknown users that looks like a real one", function()
    local real = scram_new("alice", "pw")
    local _, real_first = client_login(real, "alice", "pw")
    local function first_of(user)
      local s = scram_new(user, nil)
      local rc, sfirst = client_login(s, user, "pw")
      assert.are.equal(lib.SY_AUTH_EFAILED, rc)
      assert.are.equal("no such user", detail(s))
      return sfirst
    end
    local a1, a2, b = first_of("ghost"), first_of("ghost"), first_of("phantom")
    local salt = function(m) return m:match(",s=([^,]+),") end
    local iter = function(m) return m:match(",i=(%d+)$") end
    -- Stable per user (a changing salt would give unknown users away),
    -- different between users, same shape as a real user's.
    assert.are.equal(salt(a1), salt(a2))
    assert.are_not.equal(salt(a1), salt(b))
    assert.are.equal(#salt(real_first), #salt(a1))
    assert.are.equal(iter(real_first), iter(a1))
    -- A different mock key (another engine) gives different fake salts.
    local other = ffi.new("uint8_t[32]")
    assert.are.equal(0, lib.sy__auth_mock_key_init(other))
    local s = scram_new("ghost", nil, other)
    local _, first = step(s, "n,,n=,r=abc")
    assert.are_not.equal(salt(a1), salt(first))
  end)

  it("fails an md5 or broken stored secret at the end, like a wrong password", function()
    for _, secret in ipairs({ "md5" .. ("0"):rep(32), "SCRAM-SHA-256$4096:abc$def:ghi" }) do
      local s = scram_new("dave", secret)
      local rc = client_login(s, "dave", "pw")
      assert.are.equal(lib.SY_AUTH_EFAILED, rc)
    end
  end)

  it("refuses malformed client-first messages with a clear code", function()
    local cases = {
      { "", "EMALFORMED" },
      { "x", "EMALFORMED" },
      { "p=tls-server-end-point,,n=,r=abc", "ECHANNEL" },
      { "n,a=bob,n=,r=abc", "EMALFORMED" },
      { "n,,m=ext,n=,r=abc", "EMALFORMED" },
      { "n,,n=user", "EMALFORMED" },
      { "n,,n=user,r=", "EMALFORMED" },
      { "n,,n=user,r=a b", "EMALFORMED" },
      { "n,,n=user,r=abc,1=x", "EMALFORMED" },
      { "n,,n=user,r=abc,", "EMALFORMED" },
      { "n,n=user,r=abc", "EMALFORMED" },
      { "n,,r=abc", "EMALFORMED" },
      { "n,,n=user,r=ab\0c", "EMALFORMED" },
      { "n,,n=user,r=" .. ("a"):rep(5000), "EMALFORMED" },
    }
    for _, c in ipairs(cases) do
      local s = scram_new("carol", "pw")
      local rc, out = step(s, c[1])
      assert.are.equal(lib["SY_AUTH_" .. c[2]], rc, c[1]:sub(1, 40))
      assert.is_nil(out)
      assert.is_true(#detail(s) > 0)
      assert.are.equal(lib.SY_AUTH_ESTATE, (step(s, "n,,n=,r=abc")))
    end
    -- Optional extensions after the nonce are skipped, as PostgreSQL does.
    local s = scram_new("carol", "pw")
    assert.are.equal(lib.SY_AUTH_CONTINUE, (step(s, "n,,n=carol,r=abc,x=ext")))
  end)

  it("refuses malformed client-final messages with a clear code", function()
    local good_proof = b64enc(("\1"):rep(32))
    local cases = {
      function(n) return "c=biws" .. ",r=" .. n end,                      -- no proof
      function(n) return "r=" .. n .. ",p=" .. good_proof end,            -- no c=
      function(n) return "c=eSws,r=" .. n .. ",p=" .. good_proof end,     -- gs2 y vs n
      function(n) return "c=bi!s,r=" .. n .. ",p=" .. good_proof end,     -- bad base64
      function(n) return "c=biws,r=" .. n .. "x,p=" .. good_proof end,    -- nonce differs
      function() return "c=biws,r=abc,p=" .. good_proof end,             -- only client's
      function(n) return "c=biws,r=" .. n .. ",p=AAAA" end,               -- short proof
      function(n) return "c=biws,r=" .. n .. ",p=" .. good_proof .. ",x=1" end, -- p not last
      function(n) return "c=biws,r=" .. n .. ",p=" .. good_proof:sub(2) end,
      function(n) return "c=biws,r=" .. n .. ",,p=" .. good_proof end,
      function(n) return "c=biws,r=" .. n .. ",p=" .. good_proof .. "\0" end,
      function(n) return "c=cD10bHMtc2VydmVyLWVuZC1wb2ludCws,r=" .. n .. ",p=" .. good_proof end,
    }
    for i, make in ipairs(cases) do
      local s = scram_new("carol", "pw")
      local _, sfirst = step(s, "n,,n=carol,r=abc")
      local nonce = sfirst:match("^r=([^,]+)")
      local rc, out = step(s, make(nonce))
      assert.are.equal(lib.SY_AUTH_EMALFORMED, rc, "case " .. i)
      assert.is_nil(out)
    end
    -- A well-formed final with a wrong proof is a failed login, not malformed.
    local s = scram_new("carol", "pw")
    local _, sfirst = step(s, "n,,n=carol,r=abc")
    local rc = step(s, "c=biws,r=" .. sfirst:match("^r=([^,]+)") .. ",x=ext,p=" .. good_proof)
    assert.are.equal(lib.SY_AUTH_EFAILED, rc)
  end)

  it("survives random input at both steps", function()
    math.randomseed(7)
    -- A stored secret, so the loop measures parsing, not PBKDF2.
    local secret = ffi.new("char[256]")
    assert.are.equal(0, lib.sy__scram_build_secret("pw", nil, 0, 4096, secret, 256))
    local alphabet = "nyp,=rcs0aA+/\0 "
    for _ = 1, 3000 do
      local t = {}
      for k = 1, math.random(0, 80) do
        local j = math.random(1, #alphabet)
        t[k] = math.random() < 0.7 and alphabet:sub(j, j) or string.char(math.random(0, 255))
      end
      local msg = table.concat(t)
      local s = scram_new("carol", secret)
      local rc = step(s, msg)
      assert.is_true(rc == lib.SY_AUTH_CONTINUE or rc < 0)
      if rc ~= lib.SY_AUTH_CONTINUE then
        s = scram_new("carol", secret)
        step(s, "n,,n=,r=x")
      end
      rc = step(s, "c=biws,r=x" .. msg)
      assert.is_true(rc < 0)
    end
  end)

  it("rejects bad arguments without crashing", function()
    local pp = ffi.new("sy_scram *[1]")
    assert.are.equal(lib.SY_AUTH_EINVAL, lib.sy__scram_new(nil, "pw", MOCK, pp))
    assert.are.equal(lib.SY_AUTH_EINVAL, lib.sy__scram_new("u", "pw", nil, pp))
    assert.are.equal(lib.SY_AUTH_EINVAL, lib.sy__scram_new("u", "pw", MOCK, nil))
    local s = scram_new("u", "pw")
    assert.are.equal(lib.SY_AUTH_EINVAL, lib.sy__scram_set_server_nonce(s, "a,b"))
    assert.are.equal(lib.SY_AUTH_EINVAL, lib.sy__scram_set_server_nonce(s, ""))
    assert.are.equal(lib.SY_AUTH_EINVAL, lib.sy__scram_step(s, nil, 3, nil, nil))
    lib.sy__scram_free(nil)
    assert.are.equal("authentication failed", ffi.string(lib.sy__auth_strerror(lib.SY_AUTH_EFAILED)))
  end)
end)

---------------------------------------------------------------------------
describe("auth: md5", function()
  local salt = "\1\2\3\255"

  it("verifies against a stored md5 hash and against a plain password", function()
    local hash = ffi.new("char[36]")
    assert.are.equal(0, lib.sy__md5_hash("bob", "hunter2", hash))
    assert.are.equal("md5" .. md5hex("hunter2bob"), ffi.string(hash))
    local resp = md5_response("bob", "hunter2", salt)
    assert.are.equal(lib.SY_AUTH_OK, (md5_verify("bob", ffi.string(hash), salt, resp)))
    assert.are.equal(lib.SY_AUTH_OK, (md5_verify("bob", "hunter2", salt, resp)))
  end)

  it("refuses wrong passwords, other salts and unknown users the same way", function()
    local resp = md5_response("bob", "hunter2", salt)
    local rc, why = md5_verify("bob", "hunter3", salt, resp)
    assert.are.equal(lib.SY_AUTH_EFAILED, rc)
    assert.are.equal("wrong password", why)
    assert.are.equal(lib.SY_AUTH_EFAILED, (md5_verify("bob", "hunter2", "\1\2\3\4", resp)))
    rc, why = md5_verify("nobody", nil, salt, md5_response("nobody", "x", salt))
    assert.are.equal(lib.SY_AUTH_EFAILED, rc)
    assert.are.equal("no such user", why)
    local scram = ffi.new("char[256]")
    assert.are.equal(0, lib.sy__scram_build_secret("hunter2", nil, 0, 4096, scram, 256))
    assert.are.equal(lib.SY_AUTH_EFAILED, (md5_verify("bob", ffi.string(scram), salt, resp)))
  end)

  it("refuses malformed responses before looking at the secret", function()
    for _, resp in ipairs({ "", "md5", "md5" .. ("g"):rep(32), "md5" .. ("A"):rep(32),
                            ("a"):rep(35), "md5" .. ("0"):rep(33) }) do
      assert.are.equal(lib.SY_AUTH_EMALFORMED, (md5_verify("bob", "pw", salt, resp)))
      assert.are.equal(lib.SY_AUTH_EMALFORMED, (md5_verify("nobody", nil, salt, resp)))
    end
  end)

  it("makes fresh random salts", function()
    local a, b = ffi.new("uint8_t[4]"), ffi.new("uint8_t[4]")
    assert.are.equal(0, lib.sy__md5_salt(a))
    assert.are.equal(0, lib.sy__md5_salt(b))
    assert.are_not.equal(ffi.string(a, 4), ffi.string(b, 4))
  end)
end)

---------------------------------------------------------------------------
describe("auth: secrets made by PostgreSQL 15", function()
  local cluster = require("support.cluster")
  local bed, node

  setup(function()
    bed = cluster.start({ clusters = { { name = "main", replicas = 0 } } })
    node = bed.clusters.main.primary
  end)
  teardown(function()
    if bed then bed:teardown() end
  end)

  it("logs in with SCRAM against PostgreSQL's stored secret", function()
    local secret = bed:psql(node, "SET password_encryption = 'scram-sha-256'; "
      .. "CREATE ROLE alice LOGIN PASSWORD 'pw'; "
      .. "SELECT rolpassword FROM pg_authid WHERE rolname = 'alice'")
    assert.is_truthy(secret:match("^SCRAM%-SHA%-256%$4096:"), secret)
    assert.are.equal(lib.SY_SECRET_SCRAM, lib.sy__auth_secret_kind(secret))
    local s = scram_new("alice", secret)
    local rc, sfirst, sfinal, expect = client_login(s, "alice", "pw")
    assert.are.equal(lib.SY_AUTH_OK, rc)
    assert.are.equal(expect, sfinal)
    -- The salt shown is PostgreSQL's own.
    assert.are.equal(secret:match("^SCRAM%-SHA%-256%$%d+:([^$]+)%$"), sfirst:match(",s=([^,]+),"))
    s = scram_new("alice", secret)
    assert.are.equal(lib.SY_AUTH_EFAILED, (client_login(s, "alice", "PW")))
    -- Our own secret builder agrees with PostgreSQL's for the same salt.
    local salt = b64dec(secret:match("^SCRAM%-SHA%-256%$%d+:([^$]+)%$"))
    local ours = ffi.new("char[256]")
    assert.are.equal(0, lib.sy__scram_build_secret("pw", salt, #salt, 4096, ours, 256))
    assert.are.equal(secret, ffi.string(ours))
  end)

  it("verifies md5 against PostgreSQL's stored hash", function()
    local hash = bed:psql(node, "SET password_encryption = 'md5'; "
      .. "CREATE ROLE bob LOGIN PASSWORD 'pw2'; "
      .. "SELECT rolpassword FROM pg_authid WHERE rolname = 'bob'")
    assert.are.equal(lib.SY_SECRET_MD5, lib.sy__auth_secret_kind(hash))
    local ours = ffi.new("char[36]")
    assert.are.equal(0, lib.sy__md5_hash("bob", "pw2", ours))
    assert.are.equal(hash, ffi.string(ours))
    local salt = ffi.new("uint8_t[4]")
    assert.are.equal(0, lib.sy__md5_salt(salt))
    local s4 = ffi.string(salt, 4)
    assert.are.equal(lib.SY_AUTH_OK, (md5_verify("bob", hash, s4, md5_response("bob", "pw2", s4))))
    assert.are.equal(lib.SY_AUTH_EFAILED, (md5_verify("bob", hash, s4, md5_response("bob", "pw", s4))))
    -- An md5 secret cannot serve SCRAM: a mock run, failing at the end.
    local s = scram_new("bob", hash)
    assert.are.equal(lib.SY_AUTH_EFAILED, (client_login(s, "bob", "pw2")))
  end)
end)

---------------------------------------------------------------------------
describe("auth: userlist.txt", function()
  local scram = ffi.new("char[256]")
  assert(lib.sy__scram_build_secret("pw", nil, 0, 4096, scram, 256) == 0)
  local SCRAM = ffi.string(scram)

  it("parses users, comments, doubled quotes and every secret kind", function()
    local text = table.concat({
      '; PgBouncer userlist',
      '',
      '"alice" "' .. SCRAM .. '"',
      '  "bob"\t"md5' .. md5hex("pw2bob") .. '"   ; md5 hash',
      '"car""ol" "pa""ss"',
      '"dave" "plain pass with ; semicolon"',
      '"erin" "last line without newline"',
    }, "\r\n")
    local rc, af, err = parse(text)
    assert.are.equal(0, rc, err)
    assert.are.equal(5, tonumber(lib.sy__authfile_count(af)))
    local e = lib.sy__authfile_lookup(af, "alice")
    assert.are.equal(SCRAM, ffi.string(e.secret))
    assert.are.equal(lib.SY_SECRET_SCRAM, e.kind)
    assert.are.equal(3, e.line)
    e = lib.sy__authfile_lookup(af, "bob")
    assert.are.equal(lib.SY_SECRET_MD5, e.kind)
    e = lib.sy__authfile_lookup(af, 'car"ol')
    assert.are.equal('pa"ss', ffi.string(e.secret))
    assert.are.equal(lib.SY_SECRET_PLAIN, e.kind)
    assert.are.equal("plain pass with ; semicolon",
      ffi.string(lib.sy__authfile_lookup(af, "dave").secret))
    assert.is_truthy(lib.sy__authfile_lookup(af, "erin") ~= nil)
    assert.is_true(lib.sy__authfile_lookup(af, "mallory") == nil)
    assert.is_true(lib.sy__authfile_lookup(af, "") == nil)
    -- A secret from the table drives a login.
    local s = scram_new("alice", lib.sy__authfile_lookup(af, "alice").secret)
    assert.are.equal(lib.SY_AUTH_OK, (client_login(s, "alice", "pw")))
  end)

  it("accepts an empty file", function()
    local rc, af = parse("; nothing here\n\n")
    assert.are.equal(0, rc)
    assert.are.equal(0, tonumber(lib.sy__authfile_count(af)))
    assert.is_true(lib.sy__authfile_lookup(af, "x") == nil)
  end)

  it("names the line of every bad entry", function()
    local cases = {
      { '"a" "x"\n"b" "unterminated\n', "userlist.txt:2: unterminated quoted secret" },
      { '"a" "x"\n\n"b"\n', "userlist.txt:3: expected a quoted secret" },
      { 'alice "x"\n', "userlist.txt:1: expected a quoted user name" },
      { '"a" "x" extra\n', "userlist.txt:1: unexpected text after the secret" },
      { '"a""x"\n', "userlist.txt:1: expected a quoted secret" },
      { '"a" "x"\n"a" "y"\n', 'userlist.txt:2: duplicate user "a" (first on line 1)' },
      { '"" "x"\n', "userlist.txt:1: empty user name" },
      { '"a" ""\n', "userlist.txt:1: empty secret" },
      { '"a" "SCRAM-SHA-256$4096:abc$x:y"\n', "userlist.txt:1: malformed SCRAM-SHA-256 secret" },
      { '"a" "x"\n"' .. ("u"):rep(200) .. '" "x"\n', "userlist.txt:2: user name longer than 128" },
      { '"a\0b" "x"\n', "userlist.txt:1: NUL byte in user name" },
      { '"a" "x"x\n', "userlist.txt:1: unexpected text after the secret" },
    }
    for _, c in ipairs(cases) do
      local rc, af, err = parse(c[1])
      assert.are.equal(lib.SY_AUTH_EFILE, rc, c[1])
      assert.is_nil(af)
      assert.are.equal(c[2], err:sub(1, #c[2]), "for " .. c[1] .. " got " .. err)
    end
  end)

  it("loads a file and reports an unreadable one with its path", function()
    local path = os.tmpname()
    local f = assert(io.open(path, "wb"))
    f:write('"alice" "pw"\n"bob" "x" junk\n')
    f:close()
    local pp = ffi.new("sy_authfile *[1]")
    local err = ffi.new("char[256]")
    assert.are.equal(lib.SY_AUTH_EFILE, lib.sy__authfile_load(path, pp, err, 256))
    assert.are.equal(path .. ":2: unexpected text after the secret", ffi.string(err))
    f = assert(io.open(path, "wb"))
    f:write('"alice" "pw"\n')
    f:close()
    assert.are.equal(0, lib.sy__authfile_load(path, pp, err, 256))
    assert.are.equal(1, tonumber(lib.sy__authfile_count(pp[0])))
    lib.sy__authfile_free(pp[0])
    os.remove(path)
    assert.are.equal(lib.SY_AUTH_EFILE, lib.sy__authfile_load(path, pp, err, 256))
    assert.are.equal(path .. ": No such file or directory", ffi.string(err))
    assert.is_true(pp[0] == nil)
    lib.sy__authfile_free(nil)
  end)

  it("classifies secrets as PostgreSQL does", function()
    assert.are.equal(lib.SY_SECRET_MD5, lib.sy__auth_secret_kind("md5" .. ("a"):rep(32)))
    assert.are.equal(lib.SY_SECRET_PLAIN, lib.sy__auth_secret_kind("md5" .. ("a"):rep(31)))
    assert.are.equal(lib.SY_SECRET_PLAIN, lib.sy__auth_secret_kind("md5" .. ("A"):rep(32)))
    assert.are.equal(lib.SY_SECRET_SCRAM, lib.sy__auth_secret_kind(SCRAM))
    assert.are.equal(lib.SY_AUTH_EMALFORMED, lib.sy__auth_secret_kind(SCRAM:sub(1, -5)))
    assert.are.equal(lib.SY_AUTH_EMALFORMED,
      lib.sy__auth_secret_kind((SCRAM:gsub("%$4096:", "$0:"))))
    assert.are.equal(lib.SY_AUTH_EINVAL, lib.sy__auth_secret_kind(""))
    assert.are.equal(lib.SY_AUTH_EINVAL, lib.sy__auth_secret_kind(nil))
  end)
end)

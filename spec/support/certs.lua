-- Self-signed TLS certificates for the specs, made with the openssl CLI in a
-- throwaway directory that the postgres user can read (PostgreSQL wants its
-- key file owned by the server's user with mode 0600).
--
--   local certs = require("support.certs")
--   local c = certs.new()        --> { dir, cert, key }  (absolute paths)
--   ... ssl_cert_file = c.cert, ssl_key_file = c.key ...
--   c.remove()
local cluster = require("support.cluster")

local quote = cluster.quote
local M = {}

--- Makes a key and a self-signed certificate for CN=localhost (and
--- subjectAltName localhost, 127.0.0.1).  opts.cn overrides the common name.
--- Returns { dir, cert, key, remove() }; raises when openssl fails.
function M.new(opts)
  opts = opts or {}
  local dir = cluster.check("mktemp -d /tmp/switchyard-certs.XXXXXX", "mktemp"):gsub("%s+$", "")
  assert(dir ~= "", "mktemp -d gave no directory")
  local c = { dir = dir, cert = dir .. "/server.crt", key = dir .. "/server.key" }
  function c.remove()
    if c.removed then return end
    c.removed = true
    os.execute("rm -rf " .. quote(dir))
  end
  local cn = opts.cn or "localhost"
  -- An EC key: made in milliseconds, unlike a large RSA one.
  local ok, err = pcall(cluster.check, table.concat({
    "openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 2",
    "-subj", quote("/CN=" .. cn),
    "-addext", quote("subjectAltName=DNS:localhost,IP:127.0.0.1"),
    "-keyout", quote(c.key), "-out", quote(c.cert), "2>&1",
  }, " "), "openssl req")
  if ok then
    local own = cluster.is_root() and ("chown postgres:postgres " .. quote(c.key) .. " " .. quote(c.cert)
      .. " && ") or ""
    ok, err = pcall(cluster.check, own .. "chmod 755 " .. quote(dir) .. " && chmod 600 " .. quote(c.key)
      .. " && chmod 644 " .. quote(c.cert), "setting certificate permissions")
  end
  if not ok then
    c.remove()
    error(err, 2)
  end
  return c
end

return M

-- A Patroni cluster for the specs and benchmarks: one etcd and three
-- PostgreSQL 15 nodes, each run by Debian's Patroni, on loopback in a
-- throwaway directory.
--
--   local patroni = require("support.patroni")
--   local bed = patroni.start()           -- ~15-20 s: initdb, two base backups
--   bed.clusters.main.primary             -- the leader at start ({ name, port, conninfo, ... })
--   bed.patroni.urls                      -- the three REST API base URLs
--   bed.patroni.cluster()                 -- GET /cluster, decoded
--   bed.patroni.switchover("pg1", "pg2")  -- runs `patronictl switchover` in the background
--   bed:teardown()
--
-- The bed is a support.cluster bed (spawn, psql, try_psql, teardown and
-- its reaper): Patroni and etcd run as spawned processes (as postgres when
-- this runs as root), Patroni's data directories sit where the reaper
-- looks for postmasters, and teardown stops Patroni before etcd so each
-- shuts its PostgreSQL down itself.
local cluster = require("support.cluster")
local cjson = require("cjson")

local M = {}
local quote = cluster.quote
local HOST = "127.0.0.1"
local NODES = 3

local function write_file(path, text)
  local f = assert(io.open(path, "w"))
  f:write(text)
  f:close()
end

-- A command line running argv as postgres (exec'd, so the spawned pid is
-- the program's own and TERM reaches it).
local function as_postgres(argv)
  local words = {}
  for i, a in ipairs(argv) do words[i] = quote(a) end
  if cluster.is_root() then
    return "cd / && exec setpriv --reuid=postgres --regid=postgres --init-groups --reset-env "
      .. table.concat(words, " ")
  end
  return "exec " .. table.concat(words, " ")
end

-- GET url with curl's command line tool: the body, or nil.
local function http_get(url)
  local p = io.popen("curl -s -m 2 " .. quote(url) .. " 2>/dev/null")
  local body = p:read("*a")
  p:close()
  return body ~= "" and body or nil
end
M.http_get = http_get

local function node_yaml(bed, node, scope, etcd_port)
  return ([[
scope: %s
namespace: /switchyard/
name: %s
log:
  level: WARNING
restapi:
  listen: %s:%d
  connect_address: %s:%d
etcd3:
  hosts: %s:%d
bootstrap:
  dcs:
    ttl: 20
    loop_wait: 1
    retry_timeout: 5
    maximum_lag_on_failover: 1048576
    postgresql:
      use_pg_rewind: false
      parameters:
        wal_level: replica
        hot_standby: "on"
        max_wal_senders: 10
        max_replication_slots: 10
        wal_keep_size: 256MB
  initdb:
  - encoding: UTF8
  - auth: trust
postgresql:
  listen: %s:%d
  connect_address: %s:%d
  data_dir: %s
  bin_dir: %s
  pgpass: %s/pgpass.%s
  authentication:
    replication:
      username: postgres
    superuser:
      username: postgres
  parameters:
    unix_socket_directories: %s
    fsync: "off"
    full_page_writes: "off"
    shared_buffers: 16MB
    wal_receiver_status_interval: 1s
    wal_retrieve_retry_interval: 100ms
    dynamic_shared_memory_type: mmap
    jit: "off"
  basebackup:
  - checkpoint: fast
  pg_hba:
  - local all all trust
  - local replication all trust
  - host all all 127.0.0.1/32 trust
  - host replication all 127.0.0.1/32 trust
]]):format(scope, node.name, HOST, node.rest_port, HOST, node.rest_port, HOST, etcd_port,
    HOST, node.port, HOST, node.port, node.datadir, cluster.pg_bin(""):gsub("/$", ""), bed.dir,
    node.name, bed.sockdir)
end

-- Patroni's members as { name -> member } (role, state, ...), or nil.
local function members(urls)
  for _, url in ipairs(urls) do
    local body = http_get(url .. "/cluster")
    local ok, doc = pcall(cjson.decode, body or "")
    if ok and type(doc) == "table" and type(doc.members) == "table" then
      local out = {}
      for _, m in ipairs(doc.members) do out[m.name] = m end
      return out
    end
  end
end

--- Starts etcd and three Patroni nodes; returns the bed once a leader and
--- two streaming replicas run.  opts.timeout (s, default 90).
function M.start(opts)
  opts = opts or {}
  local bed = cluster.start({ empty = true })
  local ok, err = pcall(function()
    local etcd_client, etcd_peer = cluster.free_port(), cluster.free_port()
    local etcd_dir = bed.dir .. "/etcd"
    local client_url = ("http://%s:%d"):format(HOST, etcd_client)
    local peer_url = ("http://%s:%d"):format(HOST, etcd_peer)
    bed.etcd = bed:spawn(as_postgres({ "etcd", "--name", "sy", "--data-dir", etcd_dir,
      "--listen-client-urls", client_url, "--advertise-client-urls", client_url,
      "--listen-peer-urls", peer_url, "--initial-advertise-peer-urls", peer_url,
      "--initial-cluster", "sy=" .. peer_url, "--initial-cluster-state", "new" }),
      bed.dir .. "/etcd.log")
    cluster.wait_for(function()
      if not cluster.pid_alive(bed.etcd.pid) then error("etcd exited", 0) end
      return (http_get(client_url .. "/health") or ""):find('"health":"true"', 1, true)
    end, 20, "etcd to answer")
    local scope = "sy" .. bed.tag:lower():gsub("[^%w]", "")
    local c = { name = "main", replicas = {} }
    bed.clusters.main = c
    bed.cluster_order = { "main" }
    bed.patroni = { urls = {}, procs = {}, by_name = {}, scope = scope }
    for i = 1, NODES do
      local port = cluster.free_port()
      local node = {
        name = "pg" .. i, cluster = "main", host = HOST, port = port,
        rest_port = cluster.free_port(),
        datadir = bed.dir .. "/main-pg" .. i,
        conninfo = ("host=%s port=%d dbname=postgres user=postgres connect_timeout=5"):format(HOST, port),
      }
      node.rest_url = ("http://%s:%d"):format(HOST, node.rest_port)
      node.yml = bed.dir .. "/" .. node.name .. ".yml"
      node.log = bed.dir .. "/" .. node.name .. ".log"
      write_file(node.yml, node_yaml(bed, node, scope, etcd_client))
      bed.nodes[i] = node
      bed.patroni.urls[i] = node.rest_url
      bed.patroni.by_name[node.name] = node
    end
    if cluster.is_root() then os.execute("chown -R postgres:postgres " .. quote(bed.dir)) end
    for i, node in ipairs(bed.nodes) do
      bed.patroni.procs[i] = bed:spawn(as_postgres({ "/usr/bin/patroni", node.yml }), node.log)
    end
    local leader = M.wait_healthy(bed, opts.timeout or 90)
    c.primary = bed.patroni.by_name[leader]
    for _, node in ipairs(bed.nodes) do
      if node ~= c.primary then c.replicas[#c.replicas + 1] = node end
    end
  end)
  if not ok then
    local logs = {}
    for _, node in ipairs(bed.nodes) do
      local f = io.open(node.log)
      if f then
        logs[#logs + 1] = node.name .. ":\n" .. f:read("*a"):sub(-1500)
        f:close()
      end
    end
    M.teardown(bed)
    error(tostring(err) .. "\n" .. table.concat(logs, "\n"), 0)
  end
  bed.patroni.cluster = function() return members(bed.patroni.urls) end
  bed.patroni.switchover = function(from, to)
    return bed:spawn("patronictl -c " .. quote(bed.nodes[1].yml) .. " switchover --leader " .. quote(from)
      .. " --candidate " .. quote(to) .. " --force", bed.dir .. "/switchover." .. to .. ".out")
  end
  bed.teardown = M.teardown
  return bed
end

--- Waits for one running leader and every other member running and
--- streaming from it; returns the leader's name.
function M.wait_healthy(bed, timeout)
  return cluster.wait_for(function()
    for _, p in ipairs(bed.patroni.procs) do
      if not cluster.pid_alive(p.pid) then error("patroni exited", 0) end
    end
    local m = members(bed.patroni.urls)
    if not m then return nil end
    local leader, running = nil, 0
    for name, member in pairs(m) do
      if member.state == "running" or member.state == "streaming" then running = running + 1 end
      if member.role == "leader" and member.state == "running" then leader = name end
    end
    if not leader or running < NODES then return nil end
    local ok, n = bed:try_psql(bed.patroni.by_name[leader],
      "SELECT count(*) FROM pg_stat_replication WHERE state = 'streaming'")
    return ok and tonumber(n) == NODES - 1 and leader or nil
  end, timeout, "Patroni: a leader and " .. (NODES - 1) .. " streaming replicas", 0.25)
end

--- Stops Patroni (each stops its PostgreSQL), then etcd, then the bed.
function M.teardown(bed)
  if bed.torn_down then return end
  local procs = bed.patroni and bed.patroni.procs or {}
  for _, p in ipairs(procs) do os.execute("kill -TERM " .. p.pid .. " 2>/dev/null") end
  pcall(cluster.wait_for, function()
    for _, p in ipairs(procs) do
      if cluster.pid_alive(p.pid) then return false end
    end
    return true
  end, 20, "Patroni to stop")
  for _, p in ipairs(procs) do p.stop("KILL") end
  if bed.etcd then bed.etcd.stop() end
  getmetatable(bed).__index.teardown(bed)
end

return M

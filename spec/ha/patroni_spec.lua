-- Following Patroni (failover.mode = "patroni"): three PostgreSQL nodes run
-- by Debian's Patroni with etcd (spec/support/patroni.lua).  Two switchyard
-- instances follow the same Patroni cluster side by side, knowing nothing
-- of each other: an embedded engine and the proxy.  `patronictl
-- switchover` runs under a read/write load on both; writes move to the
-- new leader, none is lost, none goes to two primaries.  Then Patroni
-- endpoints that answer garbage, refuse or stay silent are reported and
-- handled by the health thresholds while queries keep flowing.
local cluster = require("support.cluster")
local patroni = require("support.patroni")
local E = require("support.engine")
local proxy = require("support.proxy")

local HEALTH = "health = { interval = 0.25, timeout = 1, fall = 3, rise = 1 },"

local function read_file(path)
  local f = io.open(path)
  if not f then return "" end
  local s = f:read("*a")
  f:close()
  return s
end

local function urls_lua(urls)
  local out = {}
  for i, u in ipairs(urls) do out[i] = ("%q"):format(u) end
  return "{ " .. table.concat(out, ", ") .. " }"
end

describe("following Patroni", function()
  local bed, c, ports, px, eng

  local function follow(urls, write_wait)
    return ("failover = { mode = \"patroni\", patroni = %s, write_wait = %s }")
      :format(urls_lua(urls), write_wait or 15)
  end

  -- The node Patroni names the running leader now.
  local function leader()
    for name, m in pairs(bed.patroni.cluster() or {}) do
      if m.role == "leader" and m.state == "running" then return bed.patroni.by_name[name] end
    end
  end

  local function engine_config(urls, write_wait, path)
    return E.write_config(bed, { auto_roles = true, extra = HEALTH, path = path,
      cluster_extra = follow(urls, write_wait) })
  end

  local function start_engine(urls, write_wait)
    local path = engine_config(urls, write_wait)
    local e, err = E.new(path)
    assert(e, err)
    e.config_path = path
    return e
  end

  setup(function()
    bed = patroni.start()
    c = bed.clusters.main
    ports = E.port_names(bed, "main.")
    bed:psql(c.primary, "CREATE TABLE pt_engine (v int PRIMARY KEY, port int);"
      .. "CREATE TABLE fo_proxy (v int PRIMARY KEY, port int)")
    px = proxy.start(bed, { auto_roles = true, cluster_extra = follow(bed.patroni.urls),
      extra = HEALTH .. " pool = { min = 1, max = 8 }," })
    eng = start_engine(bed.patroni.urls)
  end)

  teardown(function()
    if eng then eng:close() end
    if px then px.stop() end
    if bed then bed:teardown() end
  end)

  it("takes the primary from Patroni's leader, confirmed by polling", function()
    assert.is_true(eng:run_until(function()
      local stats = eng:node_stats()
      for _, r in ipairs(c.replicas) do
        if stats["main." .. r.name].role ~= "replica" then return false end
      end
      return stats["main." .. c.primary.name].role == "primary"
    end, 10), eng:event_log())
    local stats = eng:node_stats()
    for _, r in ipairs(c.replicas) do
      assert.are.equal("replica", stats["main." .. r.name].role)
    end
    local r = eng:query("INSERT INTO pt_engine (v, port) VALUES (0, inet_server_port()) RETURNING port")
    assert.is_true(r.ok, r.message)
    assert.are.equal("main." .. c.primary.name, ports[r.value])
    assert.are.equal("leader", eng:node_stats()["main." .. c.primary.name].patroni)
    -- The proxy's console says the same, in SHOW NODES' last column.
    cluster.wait_for(function()
      local ok, out = px.admin("SHOW NODES")
      return ok and (out .. "\n"):find("main." .. c.primary.name .. "|main|primary|[^\n]*|leader\n") ~= nil
    end, 10, "SHOW NODES to name the leader")
  end)

  it("moves writes to the new leader of a switchover under load; none lost, none on two primaries",
    function()
      local old = leader()
      local new = old == c.replicas[1] and c.replicas[2] or c.replicas[1]
      local reads = { ok = 0, failed = {} }
      local w = eng:writer(function(seq)
        if seq % 3 == 0 then return "SELECT inet_server_port()" end
        return "INSERT INTO pt_engine (v, port) VALUES ($1, inet_server_port()) RETURNING port",
          { tostring(seq) }
      end, 4)
      local writer = cluster.repo_root() .. "/spec/clients/failover_writer.py"
      local py_out = bed.dir .. "/writer.out"
      -- It writes until stopped, two seconds after the switchover ended.
      local py = bed:spawn(px.env() .. "/usr/bin/python3 " .. cluster.quote(writer) .. " 120", py_out)
      local t0 = cluster.now()
      w.run_while(function() return cluster.now() - t0 < 2 end, 5)
      local sw = bed.patroni.switchover(old.name, new.name)
      local sw_done
      w.run_while(function()
        if not sw_done and not cluster.pid_alive(sw.pid) then sw_done = cluster.now() end
        return not sw_done or cluster.now() - sw_done < 2
      end, 60)
      eng:run_until(function() return w.inflight == 0 end, 20)
      py.stop()
      local sw_text = read_file(bed.dir .. "/switchover." .. new.name .. ".out")
      assert.matches("Successfully switched over", sw_text)

      -- The embedded engine: which server ran each acknowledged statement.
      local last_old, first_new, on_new, writes = -math.huge, math.huge, 0, {}
      for _, a in ipairs(w.acked) do
        local who = ports[a.value]
        if a.seq % 3 == 0 then
          reads.ok = reads.ok + 1
        else
          writes[#writes + 1] = a.seq
          if who == "main." .. old.name then last_old = math.max(last_old, a.at) end
          if who == "main." .. new.name then
            first_new = math.min(first_new, a.at)
            on_new = on_new + 1
          end
        end
      end
      local write_failures = {}
      for _, f in ipairs(w.failures) do
        if f.seq % 3 == 0 then
          reads.failed[#reads.failed + 1] = f.message
        else
          write_failures[#write_failures + 1] = f.message
        end
      end
      local log = eng:event_log() .. "\n" .. px.log_text():sub(-3000)
      assert.is_true(on_new > 0, "no write reached the new leader\n" .. log)
      assert.is_true(last_old < first_new, "writes on both primaries interleaved\n" .. log)
      -- Only statements already running on the old leader when Patroni
      -- stopped it may fail; the rest waited for the new one.
      assert.is_true(#write_failures <= 4, table.concat(write_failures, "\n") .. "\n" .. log)
      assert.are.equal(0, #reads.failed, table.concat(reads.failed, "\n") .. "\n" .. log)
      assert.is_true(reads.ok > 0)
      local present = {}
      for v in bed:psql(new, "SELECT v FROM pt_engine"):gmatch("%d+") do present[v] = true end
      local missing = {}
      for _, seq in ipairs(writes) do
        if not present[tostring(seq)] then missing[#missing + 1] = seq end
      end
      assert.are.equal(0, #missing, "acknowledged but missing: " .. table.concat(missing, ", "))
      local said = {}
      for _, ev in ipairs(eng:events_of("role_changed")) do
        said[#said + 1] = ev.message
      end
      said = table.concat(said, "\n")
      assert.matches("main." .. old.name .. " is now unknown (was primary): Patroni's leader is ", said, 1, true)
      -- (was replica, or was unknown when its poll saw the promotion
      -- before Patroni's reply named it)
      assert.matches("main." .. new.name .. " is now primary (was ", said, 1, true)

      -- The proxy, following the same Patroni on its own.
      local text = read_file(py_out)
      local py_fails, py_new, py_missing = {}, 0, {}
      present = {}
      for v in bed:psql(new, "SELECT v FROM fo_proxy"):gmatch("%d+") do present[v] = true end
      for line in text:gmatch("[^\n]+") do
        local id, port = line:match("^ok (%d+) (%d+)")
        if id then
          if ports[port] == "main." .. new.name then py_new = py_new + 1 end
          if not present[id] then py_missing[#py_missing + 1] = id end
        elseif line:match("^fail") then
          py_fails[#py_fails + 1] = line
        end
      end
      assert.is_true(py_new > 0, "no proxy write reached the new leader\n" .. text:sub(-600) .. log)
      assert.is_true(#py_fails <= 2, table.concat(py_fails, "\n") .. "\n" .. log)
      assert.are.equal(0, #py_missing, "acknowledged through the proxy but missing: "
        .. table.concat(py_missing, ", "))
    end)

  it("examples/configs/patroni.lua follows the same Patroni", function()
    local ffi = require("ffi")
    pcall(ffi.cdef, "int setenv(const char *name, const char *value, int overwrite);")
    local env = { SY_PATRONI_URLS = table.concat(bed.patroni.urls, ","), SY_HOST = "127.0.0.1" }
    for i, node in ipairs(bed.nodes) do env["SY_PG" .. i .. "_PORT"] = tostring(node.port) end
    local prefix = {}
    for k, v in pairs(env) do
      assert(ffi.C.setenv(k, v, 1) == 0) -- for the engine's Lua state, in this process
      prefix[#prefix + 1] = k .. "=" .. cluster.quote(v)
    end
    local path = cluster.repo_root() .. "/examples/configs/patroni.lua"
    local code, out, err = cluster.run(table.concat(prefix, " ") .. " " .. cluster.quote(cluster.build_dir()
      .. "/switchyard") .. " check " .. cluster.quote(path))
    assert.are.equal(0, code, err .. out)
    local e, why = E.new(path)
    assert(e, why)
    local ok, failure = pcall(function()
      local now = cluster.wait_for(leader, 30, "Patroni's leader")
      -- Every node polled: the leader primary, the others replicas.
      assert.is_true(e:run_until(function()
        for name, st in pairs(e:node_stats()) do
          if st.role ~= (name == "main." .. now.name and "primary" or "replica") then return false end
        end
        return true
      end, 10), e:event_log())
      local wr = e:query("INSERT INTO pt_engine (v, port) VALUES (-6, inet_server_port()) RETURNING port")
      assert.is_true(wr.ok, wr.message)
      assert.are.equal("main." .. now.name, ports[wr.value])
      local r = e:query("SELECT inet_server_port()")
      assert.is_true(r.ok, r.message)
      assert.are_not.equal("main." .. now.name, ports[r.value]) -- reads on a replica
    end)
    e:close()
    if not ok then error(failure, 0) end
  end)

  describe("Patroni endpoints that misbehave", function()
    local servers = {}
    local fault

    local function http_server(dir, body)
      os.execute("mkdir -p " .. cluster.quote(dir))
      local f = assert(io.open(dir .. "/cluster", "w"))
      f:write(body)
      f:close()
      local port = cluster.free_port()
      servers[#servers + 1] = bed:spawn("cd " .. cluster.quote(dir) .. " && exec /usr/bin/python3 -m http.server "
        .. port .. " --bind 127.0.0.1", dir .. ".log")
      cluster.wait_for(function() return patroni.http_get(("http://127.0.0.1:%d/cluster"):format(port)) end,
        10, "the test HTTP server")
      return ("http://127.0.0.1:%d"):format(port)
    end

    -- Accepts connections and never answers.
    local function silent_server()
      local port = cluster.free_port()
      servers[#servers + 1] = bed:spawn(("exec /usr/bin/python3 -c %s"):format(cluster.quote(
        "import socket, time\ns = socket.socket()\ns.bind(('127.0.0.1', " .. port .. "))\ns.listen(16)\n"
        .. "held = []\nwhile True:\n    held.append(s.accept())\n")))
      local url = ("http://127.0.0.1:%d"):format(port)
      -- curl exits 28 (timed out) once the port accepts, 7 while refused.
      cluster.wait_for(function()
        return os.execute("curl -s -m 0.3 -o /dev/null " .. url .. " 2>/dev/null") == 28 * 256
      end, 10, "the silent server to listen")
      return url
    end

    -- Serves `members` (a list of { name, role, node }) as Patroni's
    -- /cluster, addresses taken from the nodes.
    local function fake_patroni(dir, members)
      local parts = {}
      for i, m in ipairs(members) do
        parts[i] = ('{"name": "%s", "role": "%s", "state": "running", "host": "127.0.0.1", "port": %d}')
          :format(m[1], m[2], m[3].port)
      end
      return http_server(dir, '{"members": [' .. table.concat(parts, ", ") .. ']}')
    end

    -- An engine whose nodes are named "n1".."n3" (never like a member):
    -- Patroni's members match them by host and port only.
    local function unnamed_config(path, failover, extra)
      local lines = { "return { clusters = { main = { nodes = {" }
      for i, node in ipairs(bed.nodes) do
        lines[#lines + 1] = ("  { name = %q, conninfo = %q },"):format("n" .. i, node.conninfo)
      end
      lines[#lines + 1] = "}, " .. failover .. " } }, log_level = \"warn\", " .. HEALTH .. (extra or "") .. " }"
      local f = assert(io.open(path, "w"))
      f:write(table.concat(lines, "\n"))
      f:close()
      return path
    end

    local function start_unnamed(urls, write_wait)
      local path = unnamed_config(E.tmpdir() .. "/config.lua", follow(urls, write_wait))
      local e, err = E.new(path)
      assert(e, err)
      e.config_path = path
      return e
    end

    after_each(function()
      if fault then fault:close() end
      fault = nil
    end)

    teardown(function()
      for _, s in ipairs(servers) do s.stop() end
    end)

    it("reports garbage, then silence, and keeps roles and queries going", function()
      local garbage = http_server(bed.dir .. "/garbage", "<html>not Patroni</html>")
      local silent = silent_server()
      local refused = ("http://127.0.0.1:%d"):format(cluster.free_port())
      fault = start_engine({ garbage, refused, silent }, 0.5)
      assert.is_true(fault:run_until(function() return #fault:events_of("patroni_down") > 0 end, 20),
        fault:event_log())
      local msg = fault:events_of("patroni_down")[1].message
      assert.matches("gave no usable answer 3 times", msg, 1, true)
      -- The last URL tried names its fault (silence: the timeout).
      assert.matches(silent .. "/cluster: [^)]*timed out", msg)
      local r = fault:query("SELECT 1")
      assert.is_true(r.ok, r.message) -- reads go on: the loop never blocked
      local wr = fault:query("INSERT INTO pt_engine (v, port) VALUES (-1, 0)")
      assert.is_false(wr.ok)
      assert.matches("no primary", wr.message)
    end)

    it("says what is wrong with a garbage reply and recovers when Patroni answers", function()
      local garbage = http_server(bed.dir .. "/garbage2", '{"members": "nope"}')
      fault = start_engine({ garbage }, 5)
      assert.is_true(fault:run_until(function() return #fault:events_of("patroni_down") > 0 end, 20),
        fault:event_log())
      assert.matches('JSON without a "members" array', fault:events_of("patroni_down")[1].message, 1, true)
      -- Fix the endpoint list by a reload: the real Patroni answers again.
      engine_config({ garbage, bed.patroni.urls[2] }, 5, fault.config_path)
      assert.are.equal(0, (fault:reload()))
      local now = cluster.wait_for(leader, 30, "Patroni's leader")
      assert.is_true(fault:run_until(function()
        local st = fault:node_stats()["main." .. now.name]
        return #fault:events_of("patroni_up") > 0 and st.role == "primary"
      end, 20), fault:event_log())
      local wr = fault:query("INSERT INTO pt_engine (v, port) VALUES (-2, inet_server_port()) RETURNING port")
      assert.is_true(wr.ok, wr.message)
      assert.are.equal("main." .. now.name, ports[wr.value])
      assert.are.equal("leader", fault:node_stats()["main." .. now.name].patroni)
    end)

    it("gives nothing to a server that says primary while Patroni names another leader", function()
      local real = cluster.wait_for(leader, 30, "Patroni's leader")
      local other = real == bed.nodes[1] and bed.nodes[2] or bed.nodes[1]
      local members = {}
      for i, node in ipairs(bed.nodes) do
        members[i] = { "member" .. i, node == other and "leader" or "replica", node }
      end
      local url = fake_patroni(bed.dir .. "/liar", members)
      fault = start_unnamed({ url }, 0.5)
      local real_name, other_name
      for i, node in ipairs(bed.nodes) do
        if node == real then real_name = "main.n" .. i end
        if node == other then other_name = "main.n" .. i end
      end
      assert.is_true(fault:run_until(function()
        local st = fault:node_stats()
        return st[real_name].polls_ok > 0 and st[other_name].polls_ok > 0
          and st[real_name].patroni == "member" and st[other_name].patroni == "leader"
      end, 10), fault:event_log())
      local st = fault:node_stats()
      assert.are.equal("unknown", st[real_name].role) -- says primary; Patroni says otherwise
      assert.are.equal("replica", st[other_name].role) -- named leader; still in recovery
      local wr = fault:query("INSERT INTO pt_engine (v, port) VALUES (-3, 0)")
      assert.is_false(wr.ok)
      assert.matches("no primary", wr.message)
      local r = fault:query("SELECT inet_server_port()")
      assert.is_true(r.ok, r.message)
      assert.are_not.equal(tostring(real.port), r.value)
      assert.are.equal(0, st[real_name].queries)
      -- A reload to failover.mode = "none" that fails (its policy's
      -- selftest) changes nothing: the state that serves still follows
      -- Patroni, and the server Patroni disowns still gets no write.
      local dir = fault.config_path:match("^(.*)/")
      local f = assert(io.open(dir .. "/failing.lua", "w"))
      f:write('return { route = function() end, selftest = function() error("refused on purpose") end }')
      f:close()
      unnamed_config(fault.config_path, 'failover = { mode = "none" }', ' policy = "failing.lua",')
      assert.are_not.equal(0, (fault:reload()))
      fault:run_for(0.6)
      assert.are.equal("unknown", fault:node_stats()[real_name].role)
      wr = fault:query("INSERT INTO pt_engine (v, port) VALUES (-5, 0)")
      assert.is_false(wr.ok)
    end)

    it("keeps the roles it last heard while Patroni stops answering", function()
      fault = start_engine(bed.patroni.urls, 5)
      local now = cluster.wait_for(leader, 30, "Patroni's leader")
      assert.is_true(fault:run_until(function()
        return fault:node_stats()["main." .. now.name].role == "primary"
      end, 10), fault:event_log())
      local refused = ("http://127.0.0.1:%d"):format(cluster.free_port())
      engine_config({ refused }, 5, fault.config_path)
      assert.are.equal(0, (fault:reload()))
      assert.is_true(fault:run_until(function() return #fault:events_of("patroni_down") > 0 end, 20),
        fault:event_log())
      assert.matches(refused .. "/cluster: [^)]*onnect", fault:events_of("patroni_down")[1].message)
      assert.are.equal("primary", fault:node_stats()["main." .. now.name].role)
      local wr = fault:query("INSERT INTO pt_engine (v, port) VALUES (-4, inet_server_port()) RETURNING port")
      assert.is_true(wr.ok, wr.message)
      assert.are.equal("main." .. now.name, ports[wr.value])
    end)
  end)
end)

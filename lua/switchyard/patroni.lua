-- Reads Patroni's GET /cluster reply for core/patroni.c: the JSON becomes a
-- plain member list, or an error that says what was wrong with it (a
-- Patroni endpoint that answers garbage must be reported, never guessed
-- at).  Patroni 2.x and 3.x reply
--   { "members": [ { "name": "pg1", "role": "leader" | "replica" |
--       "sync_standby" | "standby_leader", "state": "running" | ...,
--       "host": "10.0.0.1", "port": 5432, "timeline": 3, "lag": 0 }, ... ] }
local cjson = require("cjson.safe")

local patroni = {}

local function text(v)
  return type(v) == "string" and v or nil
end

-- body: the reply's bytes.  Returns the members, { { name, host, port,
-- leader }, ... } (port as a string, absent fields nil; leader true for the
-- running leader), and the running leader's name or nil; raises a
-- one-line reason.
function patroni.members(body)
  local doc, err = cjson.decode(body)
  if doc == nil then
    error(("not JSON (%s): %q"):format(err, body:sub(1, 60)), 0)
  end
  if type(doc) ~= "table" or type(doc.members) ~= "table" then
    error(("JSON without a \"members\" array: %q"):format(body:sub(1, 60)), 0)
  end
  local out, leader = {}, nil
  for i, m in ipairs(doc.members) do
    if type(m) ~= "table" or text(m.name) == nil then
      error(("members[%d] has no name"):format(i), 0)
    end
    local port = m.port
    if type(port) == "number" then port = ("%d"):format(port) end
    local leads = m.role == "leader" and m.state == "running"
    if leads then leader = m.name end
    out[i] = { name = m.name, host = text(m.host), port = text(port), leader = leads }
  end
  return out, leader
end

return patroni

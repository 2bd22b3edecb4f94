-- Health aware: every candidate gets a health score from 0 to 100 built
-- from its live figures; nodes scoring under `threshold` get no reads at
-- all, the others share reads in proportion to score x weight (smooth
-- weighted round robin, as in weighted.lua), so a degrading replica sheds
-- load gradually and a bad one is dropped.
--
-- The formula (each factor is 1 when the figure is ideal and falls towards
-- 0 as it worsens; an exponent of 0 switches a factor off):
--
--   score = 100 * (latency_ref_ms / (latency_ref_ms + latency_ms)) ^ latency_weight
--               * (1 - error_rate)                                  ^ error_weight
--               * (load_ref / (load_ref + inflight))                ^ load_weight
--               * (lag_ref_ms / (lag_ref_ms + lag_ms))              ^ lag_weight
--   score = 0 when the node is unhealthy, or lag_ms > max_lag_ms (if set)
--
-- A figure the engine does not know yet (nil) counts as ideal.  When lag_ms
-- is unknown but lag_bytes is known, the lag factor uses
-- lag_ref_bytes / (lag_ref_bytes + lag_bytes) instead.
--
-- With the defaults a replica 1 s behind scores 25 (and gets nothing), one
-- with 10% errors scores about 66, one answering in 100 ms scores 50.

local health_aware = {}

local DEFAULTS = {
  threshold = 50,         -- minimum score to receive reads
  latency_ref_ms = 100,   -- latency that halves the latency factor
  latency_weight = 1,
  error_weight = 4,       -- errors hurt more than slowness
  load_ref = 32,          -- queries in flight that halve the load factor
  load_weight = 1,
  lag_ref_ms = 1000,      -- replication lag that halves the lag factor
  lag_ref_bytes = 16777216,
  lag_weight = 2,
  max_lag_ms = false,     -- hard limit on lag_ms (false: none)
}
health_aware.defaults = DEFAULTS

-- The options a pick reads, defaults filled in once per options table (the
-- engine hands the same table on every call) so picks allocate nothing.
local resolved = setmetatable({}, { __mode = "k" })
local NO_OPTIONS = {}

local function params(options)
  options = options or NO_OPTIONS
  local p = resolved[options]
  if p == nil then
    p = {}
    for k, v in pairs(DEFAULTS) do
      local o = options[k]
      if o == nil then p[k] = v else p[k] = o end
    end
    resolved[options] = p
  end
  return p
end

local function score_with(node, p)
  if not node.healthy then return 0 end
  local lag_ms = node.lag_ms
  if p.max_lag_ms and lag_ms and lag_ms > p.max_lag_ms then return 0 end
  local s = 100
  local latency = node.latency_ms
  if latency and latency > 0 and p.latency_weight ~= 0 then
    s = s * (p.latency_ref_ms / (p.latency_ref_ms + latency)) ^ p.latency_weight
  end
  local err = node.error_rate
  if err and err > 0 and p.error_weight ~= 0 then
    if err >= 1 then return 0 end
    s = s * (1 - err) ^ p.error_weight
  end
  local inflight = node.inflight
  if inflight and inflight > 0 and p.load_weight ~= 0 then
    s = s * (p.load_ref / (p.load_ref + inflight)) ^ p.load_weight
  end
  if p.lag_weight ~= 0 then
    if lag_ms then
      if lag_ms > 0 then s = s * (p.lag_ref_ms / (p.lag_ref_ms + lag_ms)) ^ p.lag_weight end
    else
      local lag_bytes = node.lag_bytes
      if lag_bytes and lag_bytes > 0 then
        s = s * (p.lag_ref_bytes / (p.lag_ref_bytes + lag_bytes)) ^ p.lag_weight
      end
    end
  end
  return s
end

-- The score of one node under options; exposed for tools and specs.
function health_aware.score(node, options)
  return score_with(node, params(options))
end

-- Returns nil when no candidate reaches the threshold: the caller then
-- falls back (read_write_split sends the read to the primary).
function health_aware.pick(candidates, _, state, options)
  local p = params(options)
  local current = state.current
  if current == nil then
    current = {}
    state.current = current
  end
  local total, best, best_score = 0, nil, nil
  for i = 1, #candidates do
    local node = candidates[i]
    local s = score_with(node, p)
    if s >= p.threshold and s > 0 then
      local w = s * (node.weight or 1)
      local name = node.name
      local c = (current[name] or 0) + w
      current[name] = c
      total = total + w
      if best == nil or c > best_score then
        best, best_score = node, c
      end
    end
  end
  if best then current[best.name] = best_score - total end
  return best
end

function health_aware.check(options)
  for k, v in pairs(options) do
    local d = DEFAULTS[k]
    if d == nil then
      local known = {}
      for name in pairs(DEFAULTS) do known[#known + 1] = name end
      table.sort(known)
      error(("balancer_options.%s: unknown option (health_aware takes: %s)")
        :format(tostring(k), table.concat(known, ", ")), 0)
    end
    local ok = type(v) == "number" and v >= 0 and v < math.huge
    if k == "threshold" then
      ok = ok and v <= 100
    elseif k == "max_lag_ms" then
      ok = v == false or ok
    elseif k:find("_ref", 1, true) then
      ok = ok and v > 0
    end
    if not ok then
      error(("balancer_options.%s: expected %s, got %s"):format(k,
        k == "threshold" and "a number from 0 to 100"
        or k == "max_lag_ms" and "a non-negative number or false"
        or k:find("_ref", 1, true) and "a positive number"
        or "a non-negative number", tostring(v)), 0)
    end
  end
end

return health_aware

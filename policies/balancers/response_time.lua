-- Response time: the candidate with the lowest moving-average latency
-- (node.latency_ms).  A node without figures yet (new, or back from an
-- outage) counts as 0 ms so it is tried at once and gets measured.
--
-- Pure "fastest wins" never looks at the other nodes again, so a node that
-- was slow and has recovered would never be rediscovered: its average only
-- moves when it serves queries.  Every `explore_every`-th pick (default
-- 100, i.e. 1% of reads; 0 turns it off) therefore goes to the candidates
-- in turn instead.
--
-- Ties (rare with real figures, common at start-up) go round robin: the
-- scan starts one place further on each call and only a strictly lower
-- latency replaces the current best.

local response_time = {}

local DEFAULT_EXPLORE_EVERY = 100

function response_time.pick(candidates, _, state, options)
  local n = #candidates
  if n <= 1 then return candidates[1] end

  local every = options and options.explore_every or DEFAULT_EXPLORE_EVERY
  if every > 0 then
    local tick = (state.tick or 0) + 1
    if tick >= every then
      state.tick = 0
      local e = (state.explore or 0) % n + 1
      state.explore = e
      return candidates[e]
    end
    state.tick = tick
  end

  local start = (state.i or 0) % n + 1
  state.i = start
  local best, best_ms = nil, nil
  for k = 0, n - 1 do
    local i = start + k
    if i > n then i = i - n end
    local node = candidates[i]
    local ms = node.latency_ms or 0
    if best == nil or ms < best_ms then
      best, best_ms = node, ms
    end
  end
  return best
end

function response_time.check(options)
  for k, v in pairs(options) do
    if k ~= "explore_every" then
      error(("balancer_options.%s: unknown option (response_time takes: explore_every)")
        :format(tostring(k)), 0)
    end
    if type(v) ~= "number" or v < 0 or v ~= math.floor(v) or v == math.huge then
      error(("balancer_options.explore_every: expected a non-negative integer, got %s")
        :format(tostring(v)), 0)
    end
  end
end

return response_time

-- Least connections: the candidate with the fewest queries in flight
-- (node.inflight), which adapts to slow queries and slow nodes without
-- needing latency figures.  Ties go round robin: the scan starts one place
-- further on each call and only a strictly smaller load replaces the
-- current best, so equally idle replicas still share the work.
--
-- Option: per_weight = true compares inflight / weight instead, so a node
-- of weight 2 is considered as loaded as a weight-1 node with half its
-- queries in flight.

local least_connections = {}

function least_connections.pick(candidates, _, state, options)
  local n = #candidates
  if n <= 1 then return candidates[1] end
  local per_weight = options and options.per_weight
  local start = (state.i or 0) % n + 1
  state.i = start
  local best, best_load = nil, nil
  for k = 0, n - 1 do
    local i = start + k
    if i > n then i = i - n end
    local node = candidates[i]
    local load = node.inflight or 0
    if per_weight then load = load / (node.weight or 1) end
    if best == nil or load < best_load then
      best, best_load = node, load
    end
  end
  return best
end

function least_connections.check(options)
  for k, v in pairs(options) do
    if k ~= "per_weight" then
      error(("balancer_options.%s: unknown option (least_connections takes: per_weight)")
        :format(tostring(k)), 0)
    end
    if type(v) ~= "boolean" then
      error(("balancer_options.per_weight: expected true or false, got %s"):format(type(v)), 0)
    end
  end
end

return least_connections

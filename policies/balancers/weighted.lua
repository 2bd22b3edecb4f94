-- Smooth weighted round robin (the scheme nginx uses): a node of weight 3
-- and one of weight 1 get exactly 3 of every 4 picks, interleaved
-- (a, a, b, a) rather than in bursts (a, a, a, b).
--
-- Each candidate carries a "current" score.  On every pick all scores grow
-- by their node's weight, the highest score wins and is lowered by the sum
-- of the weights.  Over a cycle of sum-of-weights picks every node wins
-- exactly weight times.  Scores live in state.current[node.name] so the
-- rotation survives reloads; a node that leaves the candidates simply stops
-- accumulating.
--
-- Weights come from the node's `weight` in the config, or from
-- balancer_options.weights = { ["main.replica1"] = 5, replica2 = 1 } (full
-- or short node name) to try a split without touching the node list.

local weighted = {}

function weighted.pick(candidates, _, state, options)
  local n = #candidates
  if n <= 1 then return candidates[1] end
  local current = state.current
  if current == nil then
    current = {}
    state.current = current
  end
  local overrides = options and options.weights
  local total, best, best_score = 0, nil, nil
  for i = 1, n do
    local node = candidates[i]
    local name = node.name
    local w = overrides and (overrides[name] or overrides[node.node_name]) or node.weight or 1
    local score = (current[name] or 0) + w
    current[name] = score
    total = total + w
    if best == nil or score > best_score then
      best, best_score = node, score
    end
  end
  current[best.name] = best_score - total
  return best
end

function weighted.check(options)
  for k, v in pairs(options) do
    if k ~= "weights" then
      error(("balancer_options.%s: unknown option (weighted takes: weights)"):format(tostring(k)), 0)
    end
    if type(v) ~= "table" then
      error("balancer_options.weights: expected a map of node name -> positive number", 0)
    end
    for name, w in pairs(v) do
      if type(name) ~= "string" or type(w) ~= "number" or w ~= w or w <= 0 or w == math.huge then
        error(("balancer_options.weights[%q]: expected a positive number, got %s")
          :format(tostring(name), tostring(w)), 0)
      end
    end
  end
end

return weighted

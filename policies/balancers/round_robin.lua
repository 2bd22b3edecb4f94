-- Round robin: each healthy candidate in turn, so N replicas share reads
-- equally whatever their speed.  The default balancer.
--
-- state.i is the position of the last pick.  It is reduced modulo the
-- current number of candidates on every call, so a replica going down or
-- coming back only shifts the rotation, it never breaks it.

local round_robin = {}

function round_robin.pick(candidates, _, state)
  local n = #candidates
  if n <= 1 then return candidates[1] end
  local i = (state.i or 0) % n + 1
  state.i = i
  return candidates[i]
end

-- No options; refuse any, so a misspelt option of another balancer is seen.
function round_robin.check(options)
  for k in pairs(options) do
    error(("balancer_options.%s: unknown option (round_robin takes none)"):format(tostring(k)), 0)
  end
end

return round_robin

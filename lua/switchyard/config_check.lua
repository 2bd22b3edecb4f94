-- The vocabulary of config checks shared by config.lua and its sections:
-- how a bad value is described, how key paths are built, and the checks
-- for keys, numbers, strings and booleans.  Every check appends a message
-- naming the key path to errs and never raises, so one pass lists every
-- problem of a config.
local check = {}

-- How a bad value is shown in a message: type and, for scalars, the value,
-- so "expected a positive integer, got number 2.5" says exactly what is wrong.
local function describe(v)
  local t = type(v)
  if t == "string" then return ("string %q"):format(v) end
  if t == "number" or t == "boolean" then return t .. " " .. tostring(v) end
  return t
end

local function is_identifier(k)
  return type(k) == "string" and k:match("^[%a_][%w_]*$") ~= nil
end

-- "a.b" for identifier keys, a["x-y"] / a[3] otherwise.
local function child(path, key)
  if is_identifier(key) then
    if path == "" then return key end
    return path .. "." .. key
  end
  local shown = type(key) == "string" and ("%q"):format(key) or tostring(key)
  return path .. "[" .. shown .. "]"
end

local function index(path, i) return path .. "[" .. i .. "]" end

local function add(errs, path, msg)
  errs[#errs + 1] = path .. ": " .. msg
end

local function expected(errs, path, what, v)
  add(errs, path, "expected " .. what .. ", got " .. describe(v))
end

-- Keys in a stable order (strings first, alphabetically), so the error list
-- and the normalised arrays do not depend on hash order.
local function sorted_keys(t)
  local keys = {}
  for k in pairs(t) do keys[#keys + 1] = k end
  table.sort(keys, function(a, b)
    local ta, tb = type(a), type(b)
    if ta ~= tb then return ta > tb end -- "string" sorts before "number"
    if ta == "string" or ta == "number" then return a < b end
    return tostring(a) < tostring(b)
  end)
  return keys
end

-- Levenshtein distance, to suggest the key a typo meant.
local function distance(a, b)
  local prev, cur = {}, {}
  for j = 0, #b do prev[j] = j end
  for i = 1, #a do
    cur[0] = i
    for j = 1, #b do
      local cost = a:byte(i) == b:byte(j) and 0 or 1
      cur[j] = math.min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + cost)
    end
    prev, cur = cur, prev
  end
  return prev[#b]
end

local function check_keys(errs, path, t, allowed)
  local set = {}
  for _, k in ipairs(allowed) do set[k] = true end
  for _, k in ipairs(sorted_keys(t)) do
    if not set[k] then
      local msg = "unknown key"
      if type(k) == "string" then
        local best, best_d
        for _, a in ipairs(allowed) do
          local d = distance(k:lower(), a)
          if d <= 2 and d < #a and (not best_d or d < best_d) then best, best_d = a, d end
        end
        if best then msg = ("unknown key (did you mean %q?)"):format(best) end
      end
      add(errs, child(path, k), msg)
    end
  end
end

-- Number of elements when t is a proper array (keys exactly 1..n), else nil.
local function array_length(t)
  local n = 0
  for _ in pairs(t) do n = n + 1 end
  for i = 1, n do
    if t[i] == nil then return nil end
  end
  return n
end

local function finite(v)
  return type(v) == "number" and v == v and v ~= math.huge and v ~= -math.huge
end

-- Checks a number against a POOL_FIELDS-style rule; returns it or nil.
local function check_number(errs, path, v, rule)
  local noun = rule.int and "integer" or "number"
  local what
  if rule.min == 0 and not rule.positive then
    what = "a non-negative " .. noun
  elseif rule.min == 0 or (rule.int and rule.min == 1 and not rule.positive) then
    what = "a positive " .. noun
  else
    what = ("a%s %s %s %s"):format(rule.int and "n" or "", noun,
      rule.positive and ">" or ">=", tostring(rule.min))
  end
  if not finite(v)
    or (rule.int and v ~= math.floor(v))
    or (rule.positive and v <= rule.min)
    or v < rule.min then
    expected(errs, path, what, v)
    return nil
  end
  return v
end

local function check_string(errs, path, v, what)
  if type(v) ~= "string" or v == "" then
    expected(errs, path, what or "a non-empty string", v)
    return nil
  end
  return v
end

local function check_boolean(errs, path, v)
  if type(v) ~= "boolean" then
    expected(errs, path, "true or false", v)
    return nil
  end
  return v
end

-- Checks a table of numeric keys against FIELDS-style rules; returns only
-- the keys that were given and valid (callers merge them over defaults).
-- mixed: the table also holds other keys, which the caller checks.
local function check_number_fields(errs, path, raw, fields, mixed)
  local out = {}
  if raw == nil then return out end
  if type(raw) ~= "table" then
    expected(errs, path, "a table", raw)
    return out
  end
  if not mixed then
    local keys = {}
    for i, f in ipairs(fields) do keys[i] = f.key end
    check_keys(errs, path, raw, keys)
  end
  for _, rule in ipairs(fields) do
    local v = raw[rule.key]
    if v ~= nil then out[rule.key] = check_number(errs, child(path, rule.key), v, rule) end
  end
  return out
end

local function merge(base, over)
  local out = {}
  for k, v in pairs(base) do out[k] = v end
  for k, v in pairs(over) do out[k] = v end
  return out
end

-- A table of numeric settings: the defaults with the valid given keys over.
local function check_settings(errs, path, raw, fields, defaults)
  return merge(defaults, check_number_fields(errs, path, raw, fields))
end

-- One of a fixed set of strings; returns it or nil.
local function check_choice(errs, path, v, choices)
  for _, c in ipairs(choices) do
    if v == c then return v end
  end
  local shown = {}
  for i, c in ipairs(choices) do shown[i] = ("%q"):format(c) end
  expected(errs, path, "one of " .. table.concat(shown, ", "), v)
  return nil
end

check.check_settings = check_settings
check.check_choice = check_choice
check.describe = describe
check.is_identifier = is_identifier
check.child = child
check.index = index
check.add = add
check.expected = expected
check.sorted_keys = sorted_keys
check.distance = distance
check.check_keys = check_keys
check.array_length = array_length
check.finite = finite
check.check_number = check_number
check.check_string = check_string
check.check_boolean = check_boolean
check.check_number_fields = check_number_fields
check.merge = merge

return check

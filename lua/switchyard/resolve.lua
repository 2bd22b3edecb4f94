-- Finds and loads the pluggable Lua pieces a config names: balancers (and,
-- later, other kinds of module) given either as a bare name, which means a
-- built-in shipped under policies/, or as a path to a user's own file.
--
-- The rule is the same everywhere so users learn it once: a value that
-- contains "/" or ends in ".lua" is a path, resolved against the directory
-- of the config file; anything else is a built-in name.
--
-- Loaded modules are cached for the life of the Lua state.  The engine
-- builds a fresh state on every reload, so an edited file is picked up then
-- and never half-way through serving queries.

local resolve = {}

-- Keyed by "<namespace>:<name>" or "file:<absolute path>".
local cache = {}

-- True when the value names a file rather than a built-in.
function resolve.is_path(name_or_path)
  return name_or_path:find("/", 1, true) ~= nil or name_or_path:sub(-4) == ".lua"
end

-- Collapses "." and "dir/.." segments so the paths we report and cache are
-- canonical (two spellings of one file must not load it twice).
function resolve.normalize(path)
  local absolute = path:sub(1, 1) == "/"
  local parts = {}
  for seg in path:gmatch("[^/]+") do
    if seg == ".." then
      if #parts > 0 and parts[#parts] ~= ".." then
        parts[#parts] = nil
      elseif not absolute then
        parts[#parts + 1] = ".."
      end
    elseif seg ~= "." then
      parts[#parts + 1] = seg
    end
  end
  local joined = table.concat(parts, "/")
  if absolute then return "/" .. joined end
  if joined == "" then return "." end
  return joined
end

local cwd_cached

-- The process's working directory.  The engine runs on LuaJIT, whose FFI
-- reaches getcwd() without a subprocess; $PWD is the fallback for other
-- interpreters (it can be stale, but only matters for relative paths).
function resolve.cwd()
  if cwd_cached then return cwd_cached end
  local ok, ffi = pcall(require, "ffi")
  if ok then
    -- Another module may have declared getcwd already; that is fine.
    pcall(ffi.cdef, "char *getcwd(char *buf, size_t size);")
    local buf = ffi.new("char[?]", 4096)
    local got, p = pcall(ffi.C.getcwd, buf, 4096)
    if got and p ~= nil then
      cwd_cached = ffi.string(p)
      return cwd_cached
    end
  end
  cwd_cached = os.getenv("PWD") or "."
  return cwd_cached
end

-- Makes path absolute, against base (itself made absolute) or the cwd.
function resolve.absolute(path, base)
  if path:sub(1, 1) == "/" then return resolve.normalize(path) end
  base = base or resolve.cwd()
  if base:sub(1, 1) ~= "/" then base = resolve.cwd() .. "/" .. base end
  return resolve.normalize(base .. "/" .. path)
end

-- The directory part of a file path ("." for a bare file name).
function resolve.dirname(path)
  local dir = path:match("^(.*)/[^/]*$")
  if dir == nil then return "." end
  if dir == "" then return "/" end
  return dir
end

function resolve.file_exists(path)
  local f = io.open(path, "r")
  if not f then return false end
  -- io.open succeeds on directories on Linux; reading tells them apart.
  local ok = f:read(0) ~= nil or f:read("*a") ~= nil
  f:close()
  return ok
end

-- Absolute path of the file that name_or_path designates: a built-in name
-- maps to <home>/<subdir>/<name>.lua, a path is taken relative to
-- config_dir.  Returns path, or nil and a message (no key path in it: the
-- caller knows which key it was resolving).
function resolve.file(name_or_path, config_dir, home, subdir)
  local path
  if resolve.is_path(name_or_path) then
    path = resolve.absolute(name_or_path, config_dir)
    if not resolve.file_exists(path) then
      return nil, ("file %s not found"):format(path)
    end
  else
    if not name_or_path:match("^[%w_]+$") then
      return nil, ("%q is neither a built-in name (letters, digits, _) nor a path to a .lua file")
        :format(name_or_path)
    end
    path = resolve.absolute(subdir .. "/" .. name_or_path .. ".lua", home)
    if not resolve.file_exists(path) then
      return nil, ("no built-in %q (looked for %s)"):format(name_or_path, path)
    end
  end
  return path
end

-- Loads a module by built-in name (require("<namespace>.<name>"), so the
-- engine's package.path decides where built-ins live) or by path
-- (loadfile relative to config_dir).  namespace defaults to "balancers".
-- Raises an error naming the module or file on any failure, because it
-- runs while a policy loads and the engine turns that error into a refused
-- (re)load with the message shown to the operator.
function resolve.module(name_or_path, config_dir, namespace)
  namespace = namespace or "balancers"
  -- "balancers" -> "balancer" for messages about one of them.
  local kind = namespace:gsub("s$", "")
  if type(name_or_path) ~= "string" or name_or_path == "" then
    error(("%s: expected a name or a path to a .lua file, got %s")
      :format(kind, type(name_or_path)), 0)
  end

  if resolve.is_path(name_or_path) then
    local path = resolve.absolute(name_or_path, config_dir)
    local key = "file:" .. path
    local hit = cache[key]
    if hit ~= nil then return hit end
    -- Text only: a precompiled chunk could not be checked or diffed.
    local chunk, err = loadfile(path, "t")
    if not chunk then
      error(("cannot load %s: %s"):format(kind, err), 0)
    end
    resolve.on_file_loaded(path)
    local ok, mod = pcall(chunk)
    if not ok then
      error(("%s %s failed while loading: %s"):format(kind, path, tostring(mod)), 0)
    end
    if type(mod) ~= "table" then
      error(("%s %s must return a table, got %s"):format(kind, path, type(mod)), 0)
    end
    cache[key] = mod
    return mod
  end

  if not name_or_path:match("^[%w_]+$") then
    error(("%s: %q is neither a built-in name (letters, digits, _) nor a path to a .lua file")
      :format(kind, name_or_path), 0)
  end
  local key = namespace .. ":" .. name_or_path
  local hit = cache[key]
  if hit ~= nil then return hit end
  local modname = namespace .. "." .. name_or_path
  local ok, mod = pcall(require, modname)
  if not ok then
    local msg = tostring(mod)
    if msg:find("module '" .. modname .. "' not found", 1, true) then
      error(("unknown %s %q: there is no built-in policies/%s/%s.lua")
        :format(kind, name_or_path, namespace, name_or_path), 0)
    end
    error(("%s %q failed while loading: %s"):format(kind, name_or_path, msg), 0)
  end
  if type(mod) ~= "table" then
    error(("%s %q must return a table, got %s"):format(kind, name_or_path, type(mod)), 0)
  end
  cache[key] = mod
  return mod
end

-- Called with the path of every file loaded by path; the engine's runtime
-- points it at its list of files to watch for reloads.
function resolve.on_file_loaded(_) end

-- Forgets cached modules; for specs that rewrite a module file in place.
function resolve.clear_cache()
  for k in pairs(cache) do cache[k] = nil end
end

return resolve

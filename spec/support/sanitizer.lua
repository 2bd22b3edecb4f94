-- Under `make test SANITIZE=1` LuaJIT starts with the sanitizer runtimes
-- preloaded (run_specs.sh) and leak detection off, since the interpreter
-- and the tools it runs keep memory until exit by design.  The programs a
-- spec starts must not inherit that: PostgreSQL, psql and cc get no
-- sanitizer at all, while our own sanitized programs (built with the
-- runtimes linked in) get leak detection back.  SY_SANITIZER_PRELOAD keeps
-- the preload for a spec that starts LuaJIT again (the demo).
local M = {}

local preload = os.getenv("LD_PRELOAD")
if preload and os.getenv("SANITIZE") == "1" then
  local ffi = require("ffi")
  ffi.cdef([[
    int unsetenv(const char *name);
    int setenv(const char *name, const char *value, int overwrite);
  ]])
  ffi.C.setenv("SY_SANITIZER_PRELOAD", preload, 1)
  ffi.C.unsetenv("LD_PRELOAD")
  ffi.C.setenv("ASAN_OPTIONS", "detect_leaks=1:abort_on_error=1", 1)
end

return M

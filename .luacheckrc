-- luacheck settings for every Lua file in switchyard.
-- The engine runs LuaJIT, so its standard library (bit, jit, ffi-free
-- globals) is the baseline; nothing else may be global: modules return
-- tables and policies reach the engine through require("switchyard").
std = "luajit"

-- busted injects describe/it/assert/... into spec files only.
files["spec/**/*_spec.lua"] = { std = "+busted" }

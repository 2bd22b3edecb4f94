-- Every Lua file of the project passes luacheck (.luacheckrc: no globals,
-- LuaJIT's standard library, busted's in specs).
describe("luacheck", function()
  it("finds no warning in lua/, policies/, examples/, bench/ and spec/", function()
    local pipe = assert(io.popen("luacheck --no-color --formatter plain lua policies examples bench spec 2>&1"))
    local out = pipe:read("*a")
    pipe:close()
    assert.are.equal("", out)
  end)
end)

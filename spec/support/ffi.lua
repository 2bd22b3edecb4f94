-- Loads the real libswitchyard through LuaJIT's FFI for the specs.
-- The declarations come from core/switchyard.h itself (preprocessed with
-- SY_FFI so it includes nothing), so a spec can never drift from the header.
local ffi = require("ffi")
require("support.sanitizer")

local M = { ffi = ffi }

local function read_command(cmd)
  local pipe = assert(io.popen(cmd))
  local out = pipe:read("*a")
  local ok = pipe:close()
  return out, ok
end

local root = os.getenv("SWITCHYARD_ROOT") or "."
local build = os.getenv("SWITCHYARD_BUILD") or "build"
local header, ok = read_command("cc -E -P -DSY_FFI " .. root .. "/core/switchyard.h")
assert(ok and #header > 0, "cannot preprocess core/switchyard.h")
-- The FFI has no use for the include guard's leftovers or C++ wrappers.
ffi.cdef(header)
ffi.cdef([[
struct ev_loop *ev_loop_new(unsigned int flags);
void ev_loop_destroy(struct ev_loop *loop);
int ev_run(struct ev_loop *loop, int flags);
void ev_break(struct ev_loop *loop, int how);
double ev_now(struct ev_loop *loop);
typedef enum { PGRES_EMPTY_QUERY = 0, PGRES_COMMAND_OK, PGRES_TUPLES_OK,
  PGRES_COPY_OUT, PGRES_COPY_IN, PGRES_BAD_RESPONSE, PGRES_NONFATAL_ERROR,
  PGRES_FATAL_ERROR, PGRES_COPY_BOTH, PGRES_SINGLE_TUPLE,
  PGRES_PIPELINE_SYNC, PGRES_PIPELINE_ABORTED } ExecStatusType;
ExecStatusType PQresultStatus(const PGresult *res);
int PQntuples(const PGresult *res);
int PQnfields(const PGresult *res);
char *PQgetvalue(const PGresult *res, int tup_num, int field_num);
int PQgetisnull(const PGresult *res, int tup_num, int field_num);
char *PQresultErrorField(const PGresult *res, int fieldcode);
char *PQresultErrorMessage(const PGresult *res);
char *PQcmdStatus(PGresult *res);
void PQclear(PGresult *res);
]])

local build_dir = build:sub(1, 1) == "/" and build or (root .. "/" .. build)
M.lib = ffi.load(os.getenv("SWITCHYARD_LIB") or (build_dir .. "/libswitchyard.so"))
M.C = ffi.load("ev")
M.pq = ffi.load("pq")

-- Declares an internal header's functions (core/NAME.h) to the FFI, so
-- specs of internal modules use the header itself and cannot drift from
-- it.  Its #includes are dropped: only what the header declares is read.
local declared = {}
function M.cdef_internal(name)
  if declared[name] then return end
  declared[name] = true
  local f = assert(io.open(root .. "/core/" .. name .. ".h"))
  local text = f:read("*a"):gsub("#include[^\n]*", "")
  f:close()
  local tmp = os.tmpname()
  local out = assert(io.open(tmp, "w"))
  out:write(text)
  out:close()
  local decls = read_command("cc -E -P -x c " .. tmp)
  os.remove(tmp)
  assert(#decls > 0, "cannot preprocess core/" .. name .. ".h")
  ffi.cdef(decls)
end

function M.str(p)
  if p == nil then return nil end
  return ffi.string(p)
end

return M

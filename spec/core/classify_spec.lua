-- sy_classify(): the statement classifier the router runs on every query.
-- Calls the real C function through the FFI and checks kinds, flags, hints,
-- schemas and first_word for each corner the decision table in
-- core/classify.c documents, plus its safety on hostile input.
local sy = require("support.ffi")
local ffi, lib = sy.ffi, sy.lib
local bit = require("bit")

local FLAGS = {
  multi = lib.SY_STMT_MULTI,
  writable_cte = lib.SY_STMT_WRITABLE_CTE,
  locking_read = lib.SY_STMT_LOCKING_READ,
  write_function = lib.SY_STMT_WRITE_FUNCTION,
  explain_analyze = lib.SY_STMT_EXPLAIN_ANALYZE,
  read_only_tx = lib.SY_STMT_READ_ONLY_TX,
  tx_begin = lib.SY_STMT_TX_BEGIN,
  tx_end = lib.SY_STMT_TX_END,
  temp_table = lib.SY_STMT_TEMP_TABLE,
  advisory_lock = lib.SY_STMT_ADVISORY_LOCK,
  has_hints = lib.SY_STMT_HAS_HINTS,
  truncated = lib.SY_STMT_TRUNCATED,
}

local function span(sql, s)
  return sql:sub(s.off + 1, s.off + s.len)
end

-- classify(sql [, write_functions [, len]]) -> {
--   kind = "read", flags = { multi = true, ... },
--   hints = { key = value }, hint_list = { {key, value}, ... },
--   schemas = { "sales", ... }, first_word = "select", raw = sy_statement }
local function classify(sql, write_functions, len)
  local out = ffi.new("sy_statement")
  local list
  if write_functions then
    list = ffi.new("const char *[?]", #write_functions + 1)
    for i, name in ipairs(write_functions) do list[i - 1] = name end
  end
  local rc = lib.sy_classify(sql, len or #sql, list, out)
  assert.are.equal(0, rc)
  local r = {
    kind = ffi.string(lib.sy_kind_name(out.kind)),
    flags = {}, hints = {}, hint_list = {}, schemas = {},
    first_word = span(sql, out.first_word):lower(),
    raw = out,
  }
  for name, value in pairs(FLAGS) do
    if bit.band(out.flags, value) ~= 0 then r.flags[name] = true end
  end
  for i = 0, out.nhints - 1 do
    local k, v = span(sql, out.hint_keys[i]), span(sql, out.hint_values[i])
    if r.hints[k] == nil then r.hints[k] = v end
    r.hint_list[#r.hint_list + 1] = { k, v }
  end
  for i = 0, out.nschemas - 1 do
    r.schemas[#r.schemas + 1] = span(sql, out.schemas[i])
  end
  return r
end

local function set_of(list)
  local s = {}
  for _, name in ipairs(list or {}) do s[name] = true end
  return s
end

-- Each case: { sql, kind [, { flag names }] }; the flags must match exactly
-- (has_hints aside, which the hint tests cover).
local function check(cases, write_functions)
  for _, c in ipairs(cases) do
    local r = classify(c[1], write_functions)
    r.flags.has_hints = nil
    assert.are.equal(c[2], r.kind, "kind of: " .. c[1])
    assert.are.same(set_of(c[3]), r.flags, "flags of: " .. c[1])
  end
end

describe("sy_classify", function()
  describe("kinds", function()
    it("reads: SELECT, VALUES, TABLE, SHOW, FETCH, MOVE, parenthesised selects", function()
      check({
        { "SELECT 1", "read" },
        { "select * from users where id = $1", "read" },
        { "VALUES (1), (2)", "read" },
        { "TABLE users", "read" },
        { "SHOW search_path", "read" },
        { "FETCH NEXT FROM c", "read" },
        { "MOVE FORWARD 5 IN c", "read" },
        { "(SELECT 1) UNION (SELECT 2)", "read" },
        { "((select 1))", "read" },
        { "SELECT a INTO_x FROM t", "read" },
      })
    end)

    it("writes: DML, COPY FROM, CALL, DO, maintenance, LOCK, NOTIFY", function()
      check({
        { "INSERT INTO t VALUES (1)", "write" },
        { "UPDATE t SET a = 1", "write" },
        { "DELETE FROM t", "write" },
        { "MERGE INTO t USING u ON t.id = u.id WHEN MATCHED THEN DELETE", "write" },
        { "TRUNCATE t", "write" },
        { "CALL proc(1)", "write" },
        { "DO $$ BEGIN RAISE NOTICE 'x'; END $$", "write" },
        { "REFRESH MATERIALIZED VIEW mv", "write" },
        { "VACUUM FULL t", "write" },
        { "ANALYZE t", "write" },
        { "ANALYSE", "write" },
        { "CLUSTER t USING t_pkey", "write" },
        { "REINDEX TABLE t", "write" },
        { "CHECKPOINT", "write" },
        { "LOCK TABLE t IN ACCESS EXCLUSIVE MODE", "write" },
        { "NOTIFY jobs, 'go'", "write" },
      })
    end)

    it("COPY: FROM writes, TO reads unless the query in it writes", function()
      check({
        { "COPY t FROM STDIN", "write" },
        { "COPY t (a, b) FROM '/tmp/x' WITH (FORMAT csv)", "write" },
        { "COPY t TO STDOUT", "read" },
        { "COPY (SELECT * FROM t WHERE a IN (SELECT b FROM u)) TO STDOUT", "read" },
        { "COPY (INSERT INTO t VALUES (1) RETURNING *) TO STDOUT", "write" },
        { "COPY (SELECT nextval('s')) TO STDOUT", "write", { "write_function" } },
        { "COPY t", "write" }, -- no direction: taken as the stronger one
      })
    end)

    it("SELECT ... INTO creates a table: a write, or session + temp_table", function()
      check({
        { "SELECT * INTO archive FROM t", "write" },
        { "SELECT * INTO UNLOGGED archive FROM t", "write" },
        { "SELECT * INTO TEMP scratch FROM t", "session", { "temp_table" } },
        { "SELECT * INTO LOCAL TEMPORARY TABLE scratch FROM t", "session", { "temp_table" } },
        { "WITH x AS (SELECT 1) SELECT * INTO y FROM x", "write" },
        { "SELECT (SELECT 1) AS into_col FROM t", "read" },
      })
    end)

    it("transaction control and its flags", function()
      check({
        { "BEGIN", "transaction", { "tx_begin" } },
        { "begin work", "transaction", { "tx_begin" } },
        { "START TRANSACTION", "transaction", { "tx_begin" } },
        { "BEGIN READ ONLY", "transaction", { "tx_begin", "read_only_tx" } },
        { "BEGIN TRANSACTION READ ONLY", "transaction", { "tx_begin", "read_only_tx" } },
        { "START TRANSACTION ISOLATION LEVEL SERIALIZABLE, READ ONLY", "transaction",
          { "tx_begin", "read_only_tx" } },
        { "START TRANSACTION READ ONLY, DEFERRABLE", "transaction", { "tx_begin", "read_only_tx" } },
        { "BEGIN ISOLATION LEVEL READ COMMITTED", "transaction", { "tx_begin" } },
        { "BEGIN READ WRITE", "transaction", { "tx_begin" } },
        { "BEGIN READ ONLY, READ WRITE", "transaction", { "tx_begin" } },
        { "COMMIT", "transaction", { "tx_end" } },
        { "END", "transaction", { "tx_end" } },
        { "ROLLBACK", "transaction", { "tx_end" } },
        { "ABORT WORK", "transaction", { "tx_end" } },
        { "COMMIT AND CHAIN", "transaction", { "tx_end", "tx_begin" } },
        { "COMMIT AND NO CHAIN", "transaction", { "tx_end" } },
        { "ROLLBACK TO SAVEPOINT a", "transaction" },
        { "ROLLBACK TRANSACTION TO a", "transaction" },
        { "SAVEPOINT a", "transaction" },
        { "RELEASE SAVEPOINT a", "transaction" },
        { "PREPARE TRANSACTION 'gid1'", "transaction", { "tx_end" } },
        { "COMMIT PREPARED 'gid1'", "transaction" },
        { "ROLLBACK PREPARED 'gid1'", "transaction" },
        { "SET TRANSACTION ISOLATION LEVEL SERIALIZABLE", "transaction" },
        { "SET TRANSACTION READ ONLY", "transaction", { "read_only_tx" } },
        { "SET CONSTRAINTS ALL DEFERRED", "transaction" },
      })
    end)

    it("session state: SET, RESET, LISTEN, PREPARE, EXECUTE, DISCARD, DECLARE, ...", function()
      check({
        { "SET search_path TO app, public", "session" },
        { "SET LOCAL statement_timeout = '5s'", "session" },
        { "SET SESSION AUTHORIZATION joe", "session" },
        { "SET SESSION CHARACTERISTICS AS TRANSACTION READ ONLY", "session", { "read_only_tx" } },
        { "RESET ALL", "session" },
        { "LISTEN jobs", "session" },
        { "UNLISTEN *", "session" },
        { "PREPARE q (int) AS SELECT $1", "session" },
        { "PREPARE transaction AS SELECT 1", "session" }, -- a statement named "transaction"
        { "EXECUTE q (1)", "session" },
        { "DEALLOCATE ALL", "session" },
        { "DISCARD ALL", "session" },
        { "DECLARE c CURSOR WITH HOLD FOR SELECT * FROM t", "session" },
        { "CLOSE c", "session" },
        { "LOAD 'auto_explain'", "session" },
        { "SELECT set_config('app.user', 'joe', false)", "session" },
      })
    end)

    it("temporary tables, views and sequences are session state", function()
      check({
        { "CREATE TEMP TABLE t (a int)", "session", { "temp_table" } },
        { "CREATE TEMPORARY TABLE IF NOT EXISTS t (a int) ON COMMIT DROP", "session", { "temp_table" } },
        { "CREATE GLOBAL TEMPORARY TABLE t (a int)", "session", { "temp_table" } },
        { "create local temp table t (a int)", "session", { "temp_table" } },
        { "CREATE TEMP SEQUENCE s", "session", { "temp_table" } },
        { "CREATE OR REPLACE TEMP VIEW v AS SELECT nextval('s')", "session", { "temp_table" } },
        { "CREATE TEMP TABLE t AS SELECT * FROM users", "session", { "temp_table" } },
        { "CREATE TEMP TABLE t AS SELECT nextval('s')", "write", { "temp_table", "write_function" } },
        { "CREATE TABLE temp (a int)", "ddl" },
        { "CREATE UNLOGGED TABLE t (a int)", "ddl" },
      })
    end)

    it("DDL: CREATE, ALTER, DROP, GRANT, REVOKE, COMMENT, SECURITY LABEL, ...", function()
      check({
        { "CREATE TABLE t (id int DEFAULT nextval('s'))", "ddl" },
        { "CREATE INDEX CONCURRENTLY i ON t (a)", "ddl" },
        { "CREATE POLICY p ON t FOR UPDATE USING (true)", "ddl" },
        { "ALTER TABLE t ADD COLUMN b int", "ddl" },
        { "DROP TABLE IF EXISTS t CASCADE", "ddl" },
        { "GRANT SELECT ON t TO joe", "ddl" },
        { "REVOKE ALL ON t FROM joe", "ddl" },
        { "COMMENT ON TABLE t IS 'DELETE FROM t'", "ddl" },
        { "SECURITY LABEL FOR selinux ON TABLE t IS 'x'", "ddl" },
        { "REASSIGN OWNED BY joe TO ann", "ddl" },
        { "IMPORT FOREIGN SCHEMA s FROM SERVER srv INTO local", "ddl" },
        { "CREATE TABLE x AS SELECT * FROM t FOR UPDATE", "ddl" },
      })
    end)

    it("unknown: empty input, only comments, words it does not know, no keyword first", function()
      check({
        { "", "unknown" },
        { "   \n\t ", "unknown" },
        { "-- nothing here", "unknown" },
        { "/* nothing */ ; ;", "unknown" },
        { "FROBNICATE t", "unknown" },
        { "'SELECT'", "unknown" },
        { "\"select\" 1", "unknown" },
        { "42", "unknown" },
        { "frobnicate nextval('s')", "write", { "write_function" } },
      })
      assert.are.equal("", classify("").first_word)
      assert.are.equal("frobnicate", classify("FROBNICATE t").first_word)
    end)

    it("names every kind", function()
      local names = {
        [tonumber(lib.SY_KIND_UNKNOWN)] = "unknown", [tonumber(lib.SY_KIND_READ)] = "read",
        [tonumber(lib.SY_KIND_WRITE)] = "write", [tonumber(lib.SY_KIND_TRANSACTION)] = "transaction",
        [tonumber(lib.SY_KIND_SESSION)] = "session", [tonumber(lib.SY_KIND_DDL)] = "ddl",
      }
      for value, name in pairs(names) do
        assert.are.equal(name, ffi.string(lib.sy_kind_name(value)))
      end
      assert.are.equal("unknown", ffi.string(lib.sy_kind_name(99)))
      assert.are.equal("unknown", ffi.string(lib.sy_kind_name(-1)))
    end)
  end)

  describe("lexing", function()
    it("ignores case and whitespace and comments anywhere", function()
      check({
        { "sElEcT 1", "read" },
        { "\n\t  INSERT\n\tINTO t VALUES (1)", "write" },
        { "-- a line comment\nDELETE FROM t", "write" },
        { "/* a */ /* b */ -- c\r\n UPDATE t SET a = 1", "write" },
        { "/* outer /* nested */ still comment; DELETE FROM t */ SELECT 1", "read" },
        { "SELECT/**/1/**/FROM/**/t/**/FOR/**/UPDATE", "write", { "locking_read" } },
        { "SELECT * FROM t FOR -- comment\n UPDATE", "write", { "locking_read" } },
        { "\f\vSELECT 1", "read" },
      })
    end)

    it("never counts keywords inside strings, comments or quoted identifiers", function()
      check({
        { "SELECT 'FOR UPDATE' FROM t", "read" },
        { "SELECT 'x; DELETE FROM t'", "read" },
        { "SELECT 'it''s; DELETE FROM t'", "read" },
        { "SELECT \"delete\" FROM t", "read" },
        { "SELECT \"a;b\"\"; DELETE FROM t\" FROM t", "read" },
        { "SELECT 1 -- ; DELETE FROM t", "read" },
        { "SELECT 1 /* ; DELETE FROM t */", "read" },
        { "SELECT 'nextval(1)'", "read" },
        { "SELECT * FROM t WHERE note = 'select ... for update'", "read" },
        { "SELECT \"for\" FROM t ORDER BY \"update\"", "read" },
        { "SELECT 'pg_advisory_lock(1)'", "read" },
        { "SELECT deleted_at, updated_at, inserted FROM t", "read" },
      })
    end)

    it("handles dollar quoting, with and without tags", function()
      check({
        { "SELECT $$ DELETE FROM t; $$", "read" },
        { "SELECT $fn$ it's $$ ; DELETE FROM t $fn$ FROM t", "read" },
        { "SELECT $a$ $b$ ; $b$ ; $a$; DELETE FROM t", "write", { "multi" } },
        { "SELECT $1, $2 FROM t; DELETE FROM t", "write", { "multi" } },
        { "SELECT a$$b FROM t; DELETE FROM t", "write", { "multi" } }, -- $ inside an identifier
        { "DO $body$ BEGIN PERFORM nextval('s'); END $body$", "write" },
        { "SELECT $_tag1$ x $_tag1$", "read" },
      })
    end)

    it("handles E'', B'', X'', N'' and U&'' literals and U&\"\" identifiers", function()
      check({
        { "SELECT E'it\\'s; DELETE FROM t'", "read" },
        { "SELECT e'\\\\'; DELETE FROM t", "write", { "multi" } },
        { "SELECT E'a''b; DELETE FROM t'", "read" },
        { "SELECT 'a\\'; DELETE FROM t", "write", { "multi" } }, -- standard strings: \ is plain
        { "SELECT B'1010', X'ff', N'x; DELETE FROM t'", "read" },
        { "SELECT U&'d\\0061t\\+000061; DELETE FROM t'", "read" },
        { "SELECT U&\"d;a\"\"t\" FROM t", "read" },
      })
    end)

    it("cannot be fooled by standard_conforming_strings = off", function()
      check({
        -- off: 'O\'Brien' is one literal and the DELETE runs
        { "SELECT 'O\\'Brien'; DELETE FROM t", "write", { "multi" } },
        { "SELECT '\\'' FROM t; DELETE FROM x; --'", "write", { "multi" } },
        { "SELECT N'\\'; DELETE'", "write", { "multi" } },
        -- both readings agree: nothing changes
        { "SELECT * FROM t WHERE a LIKE 'x\\_%' ESCAPE '\\'", "read" },
        { "SELECT 'C:\\dir\\file'", "read" },
        -- read_only_tx and tx_end only when both readings say so
        { "SELECT 'C:\\dir\\' ; BEGIN READ ONLY", "transaction", { "multi", "tx_begin" } },
        { "BEGIN READ ONLY; SELECT 'a\\'; COMMIT --'", "transaction", { "multi", "tx_begin", "read_only_tx" } },
      })
    end)

    it("treats unterminated literals, identifiers and comments as running to the end", function()
      check({
        { "SELECT 'abc; DELETE FROM t", "read" },
        { "SELECT E'abc\\'; DELETE FROM t", "read" },
        { "SELECT \"abc; DELETE FROM t", "read" },
        { "SELECT $$abc; DELETE FROM t", "read" },
        { "SELECT $q$abc $$; DELETE FROM t", "read" },
        { "SELECT 1 /* abc; DELETE FROM t", "read" },
        { "SELECT 1 /* a /* b */ ; DELETE FROM t", "read" },
        { "SELECT (1; DELETE FROM t", "read" }, -- a syntax error: nothing runs
        { "SELECT 1); DELETE FROM t", "write", { "multi" } },
        { "SELECT $", "read" },
        { "SELECT E'", "read" },
        { "/*", "unknown" },
        { "-", "unknown" },
      })
    end)
  end)

  describe("queries that need the primary", function()
    it("writable CTEs are writes; read-only CTEs stay reads", function()
      check({
        { "WITH x AS (DELETE FROM t RETURNING *) SELECT * FROM x", "write", { "writable_cte" } },
        { "with x as (insert into t values (1) returning id) select id from x", "write", { "writable_cte" } },
        { "WITH a AS (SELECT 1), b AS (UPDATE t SET a = 1 RETURNING *) SELECT * FROM b", "write",
          { "writable_cte" } },
        { "WITH x AS MATERIALIZED (UPDATE t SET a = 1 RETURNING *) SELECT 1", "write", { "writable_cte" } },
        { "WITH x AS NOT MATERIALIZED (DELETE FROM t RETURNING *) SELECT 1", "write", { "writable_cte" } },
        { "WITH x (a) AS (MERGE INTO t USING u ON true WHEN MATCHED THEN DELETE RETURNING *) SELECT 1",
          "write", { "writable_cte" } },
        { "WITH x AS (SELECT * FROM t) SELECT * FROM x", "read" },
        { "WITH RECURSIVE r(n) AS (VALUES (1) UNION ALL SELECT n + 1 FROM r WHERE n < 9) SELECT * FROM r",
          "read" },
        { "WITH update AS (SELECT 1), delete AS (SELECT 2) SELECT * FROM update, delete", "read" },
        { "WITH x AS (SELECT 1) INSERT INTO t SELECT * FROM x", "write" },
        { "WITH x AS (SELECT 1) UPDATE t SET a = 1", "write" },
        { "WITH x AS (SELECT 1) VALUES (1)", "read" },
        { "WITH x AS (SELECT 'AS (DELETE') SELECT * FROM x", "read" },
      })
    end)

    it("locking reads: FOR UPDATE, NO KEY UPDATE, SHARE, KEY SHARE at any depth", function()
      check({
        { "SELECT * FROM t FOR UPDATE", "write", { "locking_read" } },
        { "SELECT * FROM t FOR NO KEY UPDATE NOWAIT", "write", { "locking_read" } },
        { "SELECT * FROM t FOR SHARE OF t SKIP LOCKED", "write", { "locking_read" } },
        { "select * from t for key share", "write", { "locking_read" } },
        { "SELECT * FROM (SELECT * FROM t FOR UPDATE) s", "write", { "locking_read" } },
        { "SELECT * FROM t WHERE a = 'x' FOR UPDATE", "write", { "locking_read" } },
        { "SELECT substring(a FROM 1 FOR 2) FROM t", "read" },
        { "SELECT * FROM t -- FOR UPDATE", "read" },
        { "SELECT for_update FROM t", "read" },
      })
    end)

    it("calls of built-in write functions, qualified or quoted, but not look-alikes", function()
      check({
        { "SELECT nextval('s')", "write", { "write_function" } },
        { "SELECT NEXTVAL('s')", "write", { "write_function" } },
        { "SELECT pg_catalog.nextval('s')", "write", { "write_function" } },
        { "SELECT \"pg_catalog\".\"nextval\"('s')", "write", { "write_function" } },
        { "SELECT nextval /* why not */ ('s')", "write", { "write_function" } },
        { "SELECT setval('s', 1)", "write", { "write_function" } },
        { "SELECT pg_notify('ch', 'x')", "write", { "write_function" } },
        { "SELECT txid_current()", "write", { "write_function" } },
        { "SELECT pg_advisory_xact_lock(1)", "write", { "write_function" } },
        { "SELECT pg_try_advisory_xact_lock_shared(1)", "write", { "write_function" } },
        { "SELECT lo_unlink(1234)", "write", { "write_function" } },
        { "SELECT a FROM t WHERE id = (SELECT nextval('s'))", "write", { "write_function" } },
        { "SELECT \"NEXTVAL\"('s')", "read" }, -- a different, case-sensitive name
        { "SELECT my_nextval('s')", "read" },
        { "SELECT nextval_x('s')", "read" },
        { "SELECT t.nextval FROM t", "read" },
        { "SELECT nextval FROM t", "read" },
        { "INSERT INTO nextval (a) VALUES (1)", "write" }, -- a table named nextval
        { "EXPLAIN SELECT nextval('s')", "read" },
      })
    end)

    it("session advisory locks are session state", function()
      check({
        { "SELECT pg_advisory_lock(42)", "session", { "advisory_lock" } },
        { "SELECT pg_try_advisory_lock(1, 2)", "session", { "advisory_lock" } },
        { "SELECT pg_advisory_lock_shared(42)", "session", { "advisory_lock" } },
        { "SELECT pg_advisory_unlock(42)", "session", { "advisory_lock" } },
        { "SELECT pg_advisory_unlock_all()", "session", { "advisory_lock" } },
        { "SELECT pg_advisory_lock(1), nextval('s')", "write", { "advisory_lock", "write_function" } },
        { "SELECT pg_advisory_lock_fake(1)", "read" },
      })
    end)

    it("the caller's write_functions, bare or schema-qualified", function()
      local wf = { "audit_log", "app.bump", "weird name" }
      check({
        { "SELECT audit_log(1)", "write", { "write_function" } },
        { "SELECT AUDIT_LOG(1)", "write", { "write_function" } },
        { "SELECT any_schema.audit_log(1)", "write", { "write_function" } },
        { "SELECT app.bump(1)", "write", { "write_function" } },
        { "SELECT APP.Bump(1)", "write", { "write_function" } },
        { "SELECT \"weird name\"(1)", "write", { "write_function" } },
        { "SELECT bump(1)", "read" },
        { "SELECT other.bump(1)", "read" },
        { "SELECT audit_log_x(1)", "read" },
        { "SELECT 'audit_log(1)'", "read" },
        { "SELECT nextval('s')", "write", { "write_function" } },
      }, wf)
      check({ { "SELECT audit_log(1)", "read" } }, {})
      check({ { "SELECT audit_log(1)", "read" } })
    end)

    it("EXPLAIN runs nothing unless it ANALYZEs", function()
      check({
        { "EXPLAIN DELETE FROM t", "read" },
        { "EXPLAIN VERBOSE INSERT INTO t VALUES (1)", "read" },
        { "EXPLAIN SELECT * FROM t FOR UPDATE", "read" },
        { "EXPLAIN ANALYZE SELECT 1", "read", { "explain_analyze" } },
        { "EXPLAIN ANALYSE VERBOSE SELECT 1", "read", { "explain_analyze" } },
        { "EXPLAIN ANALYZE DELETE FROM t", "write", { "explain_analyze" } },
        { "EXPLAIN ANALYZE SELECT nextval('s')", "write", { "explain_analyze", "write_function" } },
        { "EXPLAIN ANALYZE SELECT * FROM t FOR SHARE", "write", { "explain_analyze", "locking_read" } },
        { "EXPLAIN (ANALYZE) UPDATE t SET a = 1", "write", { "explain_analyze" } },
        { "EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) INSERT INTO t VALUES (1)", "write", { "explain_analyze" } },
        { "EXPLAIN (FORMAT JSON, ANALYZE true) DELETE FROM t", "write", { "explain_analyze" } },
        { "EXPLAIN (ANALYZE on) DELETE FROM t", "write", { "explain_analyze" } },
        { "EXPLAIN (ANALYZE 1) DELETE FROM t", "write", { "explain_analyze" } },
        { "EXPLAIN (ANALYZE false) DELETE FROM t", "read" },
        { "EXPLAIN (analyze OFF, costs off) DELETE FROM t", "read" },
        { "EXPLAIN (ANALYZE 0) DELETE FROM t", "read" },
        { "EXPLAIN (ANALYZE 'off') DELETE FROM t", "read" },
        { "EXPLAIN (COSTS false) DELETE FROM t", "read" },
        { "EXPLAIN ANALYZE WITH x AS (DELETE FROM t RETURNING *) SELECT * FROM x", "write",
          { "explain_analyze", "writable_cte" } },
        { "EXPLAIN ANALYZE CREATE TABLE x AS SELECT 1", "ddl", { "explain_analyze" } },
        { "EXPLAIN ANALYZE EXECUTE q", "session", { "explain_analyze" } },
        { "EXPLAIN ANALYZE (SELECT * FROM t FOR UPDATE)", "write", { "explain_analyze", "locking_read" } },
        { "EXPLAIN (ANALYZE) (SELECT 1)", "read", { "explain_analyze" } },
        { "EXPLAIN (SELECT nextval('s'))", "read" },
      })
    end)

    it("PREPARE and DECLARE stay session state but carry their query's flags", function()
      check({
        { "PREPARE q AS SELECT nextval('s')", "session", { "write_function" } },
        { "PREPARE q (int) AS SELECT * FROM t WHERE id = $1 FOR UPDATE", "session", { "locking_read" } },
        { "PREPARE q AS INSERT INTO t VALUES (1)", "session" },
        { "DECLARE c CURSOR FOR SELECT * FROM t FOR UPDATE", "session", { "locking_read" } },
        { "DECLARE c NO SCROLL CURSOR WITH HOLD FOR SELECT pg_advisory_lock(1)", "session",
          { "advisory_lock" } },
      })
    end)
  end)

  describe("multi-statement strings", function()
    it("split on top-level semicolons and take the strongest kind", function()
      check({
        { "SELECT 1; SELECT 2", "read", { "multi" } },
        { "SELECT 1;", "read" },
        { "SELECT 1;;  ; ", "read" },
        { "; SELECT 1", "read" },
        { "BEGIN; SELECT 1; COMMIT", "transaction", { "multi", "tx_begin", "tx_end" } },
        { "BEGIN; INSERT INTO t VALUES (1); COMMIT", "write", { "multi", "tx_begin", "tx_end" } },
        { "SELECT 1; INSERT INTO t VALUES (1)", "write", { "multi" } },
        { "INSERT INTO t VALUES (1); SELECT 1", "write", { "multi" } },
        { "SET a = 1; SELECT 1", "session", { "multi" } },
        { "BEGIN; SET LOCAL a = 1", "session", { "multi", "tx_begin" } },
        { "SET a = 1; INSERT INTO t VALUES (1)", "write", { "multi" } },
        { "INSERT INTO t VALUES (1); CREATE TABLE u (a int)", "ddl", { "multi" } },
        { "SELECT 1; FROBNICATE", "unknown", { "multi" } },
        { "BEGIN; FROBNICATE", "unknown", { "multi", "tx_begin" } },
        { "SET a = 1; FROBNICATE", "session", { "multi" } },
        { "FROBNICATE; DELETE FROM t", "write", { "multi" } },
        { "SELECT 1; SELECT pg_advisory_lock(1)", "session", { "multi", "advisory_lock" } },
        { "SELECT 1; SELECT * FROM t FOR UPDATE", "write", { "multi", "locking_read" } },
        { "CREATE RULE r AS ON INSERT TO t DO INSTEAD (INSERT INTO u VALUES (1); DELETE FROM v)", "ddl" },
      })
    end)

    it("keeps read_only_tx only when no part opens a read-write transaction", function()
      check({
        { "BEGIN READ ONLY; SELECT 1; COMMIT", "transaction",
          { "multi", "tx_begin", "tx_end", "read_only_tx" } },
        { "BEGIN READ ONLY; COMMIT; BEGIN", "transaction", { "multi", "tx_begin", "tx_end" } },
        { "BEGIN; COMMIT; BEGIN READ ONLY", "transaction", { "multi", "tx_begin", "tx_end" } },
        { "BEGIN READ ONLY; UPDATE t SET a = 1", "write", { "multi", "tx_begin", "read_only_tx" } },
      })
    end)

    it("does not split inside a CREATE FUNCTION ... BEGIN ATOMIC body", function()
      check({
        { "CREATE FUNCTION f() RETURNS int LANGUAGE sql BEGIN ATOMIC SELECT 1; SELECT 2; END", "ddl" },
        { "CREATE OR REPLACE PROCEDURE p() BEGIN ATOMIC INSERT INTO t VALUES (1); "
          .. "SELECT CASE WHEN true THEN 1 ELSE 2 END; END; COMMIT", "ddl", { "multi", "tx_end" } },
        { "CREATE FUNCTION f() RETURNS int LANGUAGE sql BEGIN ATOMIC SELECT 1; END; SELECT 2",
          "ddl", { "multi" } },
      })
    end)

    it("reports the first statement's leading keyword as first_word", function()
      assert.are.equal("select", classify("SELECT 1").first_word)
      assert.are.equal("insert", classify("  /* c */ -- x\n insert into t values (1)").first_word)
      assert.are.equal("select", classify("((SELECT 1))").first_word)
      assert.are.equal("with", classify("WITH x AS (SELECT 1) SELECT 1").first_word)
      assert.are.equal("begin", classify("BEGIN; DELETE FROM t; COMMIT").first_word)
      assert.are.equal("explain", classify("EXPLAIN ANALYZE DELETE FROM t").first_word)
      assert.are.equal("update", classify(";; UPDATE t SET a = 1; SELECT 1").first_word)
      assert.are.equal("", classify("'x'; SELECT 1").first_word)
      local sql = "  SeLeCt 1"
      local r = classify(sql)
      assert.are.equal(2, r.raw.first_word.off)
      assert.are.equal(6, r.raw.first_word.len)
    end)
  end)

  describe("hints", function()
    it("reads a leading /* sy: ... */ comment, after blanks or other comments", function()
      local r = classify("/* sy: route=primary node=main.replica1 */ SELECT 1")
      assert.are.same({ route = "primary", node = "main.replica1" }, r.hints)
      assert.is_true(r.flags.has_hints)
      assert.are.same({ { "route", "primary" }, { "node", "main.replica1" } }, r.hint_list)
      r = classify("\n  -- who wrote this\n /* plain */ /*sy:cluster=sales*/ SELECT 1")
      assert.are.same({ cluster = "sales" }, r.hints)
      r = classify("-- sy: route=primary\nSELECT 1")
      assert.are.same({ route = "primary" }, r.hints)
    end)

    it("takes quoted sy: values without their quotes", function()
      local sql = "/* sy: cache='5 min' tag=\"a, b\" empty= k2=v2 */ SELECT 1"
      local r = classify(sql)
      assert.are.same({ { "cache", "5 min" }, { "tag", "a, b" }, { "empty", "" }, { "k2", "v2" } }, r.hint_list)
      -- the spans point into the SQL, just inside the quotes
      assert.are.equal(sql:find("5 min", 1, true) - 1, r.raw.hint_values[0].off)
    end)

    it("reads trailing sqlcommenter comments, URL-encoding kept", function()
      local r = classify("SELECT 1 /*controller='users',action='index',route='primary'*/")
      assert.are.same({ { "controller", "users" }, { "action", "index" }, { "route", "primary" } }, r.hint_list)
      r = classify("SELECT 1 /*traceparent='00-4bf9-01',db_driver='psycopg2%3A2.9',k='it\\'s'*/;")
      assert.are.same({ traceparent = "00-4bf9-01", db_driver = "psycopg2%3A2.9", k = "it\\'s" }, r.hints)
    end)

    it("reads trailing marginalia comments", function()
      local r = classify("SELECT * FROM users /*application:Shop,controller:users,action:index*/")
      assert.are.same({ application = "Shop", controller = "users", action = "index" }, r.hints)
      r = classify("SELECT 1 /*line:/app/models/user.rb:12:in `find', job:SyncJob */")
      assert.are.same({ line = "/app/models/user.rb:12:in `find'", job = "SyncJob" }, r.hints)
    end)

    it("reads hints before and after each statement, but not inside one", function()
      local r = classify("/* sy: a=1 */ SELECT 1 /* b:2 */; /* c='3' */ SELECT 2 /* sy: d=4 */")
      assert.are.same({ { "a", "1" }, { "b", "2" }, { "c", "3" }, { "d", "4" } }, r.hint_list)
      r = classify("SELECT /* sy: route=primary */ 1")
      assert.are.same({}, r.hints)
      assert.is_nil(r.flags.has_hints)
      r = classify("SELECT 1 /* sy: a=1 */ + 2")
      assert.are.same({}, r.hints)
      r = classify("SELECT (1 /* sy: a=1 */); SELECT 2")
      assert.are.same({}, r.hints)
    end)

    it("ignores prose and malformed comments entirely (all or nothing)", function()
      for _, sql in ipairs({
        "/* fetch the users */ SELECT 1",
        "/* sy: route = primary */ SELECT 1",
        "/* sy: a=1 broken */ SELECT 1",
        "/* sy: a='unterminated */ SELECT 1",
        "/* a='1', b */ SELECT 1",
        "/* a='1' b='2' */ SELECT 1",
        "/* sy: a=1 */", -- hints alone are fine ...
      }) do
        local r = classify(sql)
        if sql == "/* sy: a=1 */" then
          assert.are.same({ a = "1" }, r.hints) -- ... and are read
        else
          assert.are.same({}, r.hints, sql)
        end
      end
      -- an unterminated comment carries nothing
      assert.are.same({}, classify("SELECT 1 /* sy: a=1").hints)
    end)

    it("keeps the first SY_MAX_HINTS pairs and flags the rest as truncated", function()
      local pairs_ = {}
      for i = 1, 20 do pairs_[#pairs_ + 1] = ("k%d=v%d"):format(i, i) end
      local r = classify("/* sy: " .. table.concat(pairs_, " ") .. " */ SELECT 1")
      assert.are.equal(16, #r.hint_list)
      assert.are.same({ "k16", "v16" }, r.hint_list[16])
      assert.is_true(r.flags.truncated)
      assert.is_true(r.flags.has_hints)
      r = classify("/* sy: a=1 */ SELECT 1")
      assert.is_nil(r.flags.truncated)
    end)
  end)

  describe("schemas", function()
    local function schemas(sql) return classify(sql).schemas end

    it("reports qualified relations after FROM, JOIN, INTO, UPDATE, TABLE, ...", function()
      assert.are.same({ "sales" }, schemas("SELECT * FROM sales.orders"))
      assert.are.same({ "sales", "crm" },
        schemas("SELECT o.id FROM sales.orders o JOIN crm.customers c ON c.id = o.cid"))
      assert.are.same({ "a", "b", "c" }, schemas("SELECT * FROM a.x, b.y AS yy, c.z"))
      assert.are.same({ "s" }, schemas("INSERT INTO s.t (a) VALUES (1)"))
      assert.are.same({ "s", "s2" }, schemas("UPDATE s.t SET a = x.b, c = y.d FROM s2.u x"))
      assert.are.same({ "s", "s2" }, schemas("DELETE FROM s.t USING s2.u WHERE s.t.id = s2.u.id"))
      assert.are.same({ "s", "s2" }, schemas("MERGE INTO s.t USING s2.u ON t.a = u.a WHEN MATCHED THEN DELETE"))
      assert.are.same({ "s" }, schemas("TABLE s.t"))
      assert.are.same({ "s", "s2" }, schemas("TRUNCATE TABLE ONLY s.t, s2.u"))
      assert.are.same({ "s" }, schemas("COPY s.t FROM STDIN"))
      assert.are.same({ "s" }, schemas("LOCK TABLE s.t IN SHARE MODE"))
      assert.are.same({ "s" }, schemas("SELECT * FROM ONLY s.t"))
      assert.are.same({ "s" }, schemas("SELECT * FROM t WHERE id IN (SELECT id FROM s.u)"))
      assert.are.same({ "a", "b" }, schemas("SELECT * FROM t1 JOIN t2 USING (id), a.x, LATERAL b.f(x.y) z"))
      assert.are.same({ "s" }, schemas("SELECT * FROM generate_series(1, 3) g, s.t"))
      assert.are.same({ "a", "b" }, schemas("VACUUM (VERBOSE, ANALYZE) a.t, b.u"))
      assert.are.same({ "a" }, schemas("ANALYZE a.t (col)"))
      assert.are.same({ "s" }, schemas("REFRESH MATERIALIZED VIEW CONCURRENTLY s.mv"))
      assert.are.same({ "s" }, schemas("WITH x AS (SELECT * FROM s.t) SELECT * FROM x"))
      assert.are.same({ "s" }, schemas("EXPLAIN SELECT * FROM s.t"))
      -- schemas named like keywords the scanner looks at
      assert.are.same({ "temp", "global", "statistics", "security" },
        schemas("SELECT * FROM temp.x, global.config, statistics.daily JOIN security.users ON true"))
      assert.are.same({ "type" }, schemas("DROP TABLE IF EXISTS type.x"))
    end)

    it("reports the schema of DDL objects and schema names themselves", function()
      assert.are.same({ "s" }, schemas("CREATE TABLE s.t (a int)"))
      assert.are.same({ "s", "r" }, schemas("CREATE TABLE s.t (a int REFERENCES r.u (id))"))
      assert.are.same({ "s" }, schemas("CREATE INDEX CONCURRENTLY IF NOT EXISTS i ON s.t (a)"))
      assert.are.same({ "s" }, schemas("DROP TABLE IF EXISTS s.t CASCADE"))
      assert.are.same({ "s", "s2" }, schemas("ALTER TABLE s.t SET SCHEMA s2"))
      assert.are.same({ "s", "f" },
        schemas("CREATE TRIGGER trg AFTER INSERT ON s.t FOR EACH ROW EXECUTE FUNCTION f.audit()"))
      assert.are.same({ "s" }, schemas("GRANT SELECT ON s.t TO joe"))
      assert.are.same({ "s" }, schemas("GRANT SELECT ON ALL TABLES IN SCHEMA s TO joe"))
      assert.are.same({ "a", "b" }, schemas("DROP SCHEMA IF EXISTS a, b CASCADE"))
      assert.are.same({ "s" }, schemas("CREATE SCHEMA s AUTHORIZATION joe"))
      assert.are.same({ "joe" }, schemas("CREATE SCHEMA AUTHORIZATION joe"))
      assert.are.same({ "global" }, schemas("CREATE SCHEMA IF NOT EXISTS global AUTHORIZATION joe"))
      assert.are.same({ "s" }, schemas("COMMENT ON COLUMN s.t.c IS 'x'"))
      assert.are.same({}, schemas("COMMENT ON COLUMN t.c IS 'x'"))
      assert.are.same({ "s" },
        schemas("CREATE FUNCTION s.f(a int) RETURNS int AS $$ SELECT 1 FROM x.y $$ LANGUAGE sql"))
      assert.are.same({ "s" }, schemas("REINDEX SCHEMA s"))
    end)

    it("reports qualified function calls, pg_catalog included", function()
      assert.are.same({ "util" }, schemas("SELECT util.slugify(name) FROM t"))
      assert.are.same({ "pg_catalog" }, schemas("SELECT pg_catalog.now()"))
      assert.are.same({ "s" }, schemas("CALL s.proc()"))
      assert.are.same({ "information_schema" }, schemas("SELECT * FROM information_schema.tables"))
      assert.are.same({}, schemas("SELECT nextval('s.seq')"))
    end)

    it("strips quotes, keeps quoted case and takes the middle of three-part names", function()
      local sql = "SELECT * FROM \"Sales\".\"Orders\""
      local r = classify(sql)
      assert.are.same({ "Sales" }, r.schemas)
      assert.are.equal("\"", sql:sub(r.raw.schemas[0].off, r.raw.schemas[0].off)) -- quoted marker
      assert.are.same({ "sch" }, schemas("SELECT * FROM db.sch.tbl"))
      assert.are.same({ "sch" }, schemas("SELECT db.sch.f(1)"))
      assert.are.same({ "we\"\"ird" }, schemas("SELECT * FROM \"we\"\"ird\".t"))
      assert.are.same({}, schemas("SELECT * FROM a.b.c.d"))
    end)

    it("does not take table.column references for schemas", function()
      assert.are.same({}, schemas("SELECT t.a, t.b FROM t WHERE t.c = 1 ORDER BY t.a, t.b"))
      assert.are.same({}, schemas("SELECT s.t.col FROM t"))
      assert.are.same({ "s" }, schemas("SELECT * FROM s.t x JOIN u y ON x.id = y.id WHERE x.a IS DISTINCT FROM y.b"))
      assert.are.same({ "s" }, schemas("SELECT extract(epoch FROM o.created_at) FROM s.orders o"))
      assert.are.same({}, schemas("SELECT substring(t.a FROM 2), trim(both FROM t.b), position(t.x IN t.y) FROM t"))
      assert.are.same({}, schemas("INSERT INTO t SELECT a.x, b.y FROM a, b"))
    end)

    it("lists each schema once, folding unquoted names as PostgreSQL does", function()
      assert.are.same({ "s" }, schemas("SELECT * FROM s.a, s.b JOIN s.c ON true"))
      assert.are.same({ "sales" }, schemas("SELECT * FROM sales.a, SALES.b, \"sales\".c"))
      assert.are.same({ "sales", "Sales" }, schemas("SELECT * FROM sales.a, \"Sales\".b, SALES.c"))
      assert.are.same({ "a", "b" }, schemas("SELECT * FROM a.x; SELECT * FROM b.y, a.z"))
    end)

    it("keeps the first SY_MAX_SCHEMAS and flags the rest as truncated", function()
      local from = {}
      for i = 1, 20 do from[#from + 1] = ("s%d.t"):format(i) end
      local r = classify("SELECT * FROM " .. table.concat(from, ", "))
      assert.are.equal(16, #r.schemas)
      assert.are.equal("s16", r.schemas[16])
      assert.is_true(r.flags.truncated)
    end)

    it("reports nothing for SET, RESET and SHOW", function()
      assert.are.same({}, schemas("SET search_path TO sales, public"))
      assert.are.same({}, schemas("SET SCHEMA 'sales'"))
      assert.are.same({}, schemas("SET app.tenant = 'x'"))
      assert.are.same({}, schemas("RESET app.tenant"))
      assert.are.same({}, schemas("SHOW app.tenant"))
    end)
  end)

  describe("robustness", function()
    it("refuses NULL sql or out with SY_EINVAL", function()
      local out = ffi.new("sy_statement")
      assert.are.equal(lib.SY_EINVAL, lib.sy_classify(nil, 0, nil, out))
      assert.are.equal(lib.SY_EINVAL, lib.sy_classify("SELECT 1", 8, nil, nil))
    end)

    it("classifies exactly len bytes, NUL bytes included", function()
      local sql = "SELECT 1; DELETE FROM t"
      assert.are.equal("read", classify(sql, nil, 8).kind)
      assert.are.equal("unknown", classify(sql, nil, 0).kind)
      local r = classify("SELECT 1\0; DELETE FROM t")
      assert.are.equal("write", r.kind)
      assert.is_true(r.flags.multi)
      assert.are.equal("read", classify("SELECT '\0'").kind)
    end)

    it("survives random bytes and SQL-ish garbage", function()
      local alphabet = { "SELECT", "FROM", "(", ")", ";", "'", "\"", "$$", "$a$", "--", "/*", "*/",
        "\n", " ", ".", ",", "E'", "\\", "x", "WITH", "AS", "FOR", "UPDATE", "nextval", "BEGIN",
        "ATOMIC", "END", "EXPLAIN", "ANALYZE", "/* sy: a=1 */", "=", ":", "\0" }
      local state = 12345
      local function rnd(n) -- small LCG: the same cases on every run
        state = (state * 1103515245 + 12345) % 2147483648
        return state % n
      end
      for _ = 1, 3000 do
        local parts = {}
        for j = 1, rnd(40) do
          parts[j] = rnd(4) == 0 and string.char(rnd(256)) or alphabet[rnd(#alphabet) + 1]
        end
        local r = classify(table.concat(parts))
        assert.is_truthy(r.kind)
        assert.is_true(r.raw.nhints <= 16 and r.raw.nschemas <= 16)
      end
    end)

    it("handles large inputs and deep nesting in linear time", function()
      local deep = ("("):rep(100000) .. "SELECT 1" .. (")"):rep(100000)
      assert.are.equal("read", classify(deep).kind)
      local long = "SELECT " .. ("a, "):rep(200000) .. "nextval('s')"
      assert.are.equal("write", classify(long).kind)
      local many = ("SELECT 1;"):rep(50000) .. "DELETE FROM t"
      local r = classify(many)
      assert.are.equal("write", r.kind)
      assert.is_true(r.flags.multi)
      local started = os.clock()
      classify(("$a$"):rep(100000))
      classify(("/*"):rep(100000))
      assert.is_true(os.clock() - started < 2)
    end)
  end)
end)

-- schema_routing: the cluster owning the statement's schema, then the
-- read/write split inside it.
local fixture = require("support.policy_fixture")

local function raw_config()
  local function cluster(schemas, port)
    return {
      schemas = schemas,
      nodes = {
        { name = "primary", conninfo = "port=" .. port, role = "primary" },
        { name = "replica1", conninfo = "port=" .. (port + 1), role = "replica" },
        { name = "replica2", conninfo = "port=" .. (port + 2), role = "replica" },
      },
    }
  end
  return {
    clusters = {
      users = cluster({ "users", "auth" }, 5432),
      commerce = cluster({ "orders", "products" }, 5442),
    },
    default_cluster = "users",
    policy = "schema_routing",
  }
end

local function target(bed, fields)
  local node, msg, state = bed:route(fields)
  if node == nil then return nil, msg, state end
  return node.name
end

describe("schema_routing", function()
  local bed
  before_each(function() bed = fixture.new({ raw = raw_config() }) end)

  it("sends reads on an owned schema to that cluster's replicas", function()
    assert.same({ ["commerce.replica1"] = 50, ["commerce.replica2"] = 50 },
      bed:tally(100, { kind = "read", schemas = { "orders" } }))
    assert.same({ ["users.replica1"] = 50, ["users.replica2"] = 50 },
      bed:tally(100, { kind = "read", schemas = { "auth" } }))
  end)

  it("sends writes on an owned schema to that cluster's primary", function()
    assert.equal("commerce.primary", target(bed, { kind = "write", schemas = { "products" } }))
    assert.equal("users.primary", target(bed, { kind = "ddl", schemas = { "users" } }))
  end)

  it("uses the first schema that has an owner", function()
    assert.equal("commerce.primary",
      target(bed, { kind = "write", schemas = { "pg_catalog", "orders", "users" } }))
  end)

  it("uses the default cluster when no schema is owned", function()
    assert.equal("users.primary", target(bed, { kind = "write", schemas = {} }))
    assert.equal("users.primary", target(bed, { kind = "write", schemas = { "public" } }))
  end)

  it("honours schema= and cluster= hints", function()
    assert.equal("commerce.primary", target(bed, { kind = "write", hints = { schema = "Orders" } }))
    assert.equal("commerce.primary", target(bed, { kind = "write", hints = { cluster = "commerce" },
      schemas = { "users" } }))
    local node, msg, state = bed:route({ kind = "read", hints = { cluster = "nope" } })
    assert.is_nil(node)
    assert.equal("switchyard: hint cluster=nope names no cluster", msg)
    assert.equal("42704", state)
  end)

  it("applies the split inside the chosen cluster (fallback, in_tx, retry)", function()
    bed:node("commerce.replica1").healthy = false
    bed:node("commerce.replica2").healthy = false
    assert.equal("commerce.primary", target(bed, { kind = "read", schemas = { "orders" } }))
    assert.equal("users.primary", target(bed, { kind = "read", in_tx = true, schemas = { "auth" } }))
    assert.same({ ["users.replica2"] = 10 }, bed:tally(10, { kind = "read", schemas = { "auth" },
      retry = { failed = bed:node("users.replica1") } }))
  end)

  it("rejects cross-cluster statements when asked to", function()
    local q = { kind = "read", schemas = { "users", "orders" } }
    assert.equal("users.replica1", target(bed, q))
    bed = fixture.new({ raw = raw_config(), options = { reject_cross_cluster = true } })
    local node, msg, state = bed:route(q)
    assert.is_nil(node)
    assert.equal('switchyard: this statement uses schemas of clusters "users" and "commerce"; '
      .. "a statement runs on one cluster", msg)
    assert.equal("0A000", state)
    assert.equal("commerce.replica1", target(bed, { kind = "read", schemas = { "orders", "public", "products" } }))
  end)

  it("checks its options", function()
    assert.has_error(function()
      fixture.new({ raw = raw_config(), options = { reject_cross_cluster = "yes" } })
    end, "policy_options.reject_cross_cluster: expected true or false, got string")
    assert.has_error(function()
      fixture.new({ raw = raw_config(), options = { reject_cross = true } })
    end, "policy_options.reject_cross: unknown option")
  end)
end)

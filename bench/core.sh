#!/bin/sh
# make bench-core: the engine's own costs, measured side by side in one run.
#  1. one routing decision (read/write split + round robin through the Lua
#     gateway, no network): median and p99 ns, decisions per second.
#  2. SELECT 1 with 16 queries in flight: a plain asynchronous libpq loop
#     against the embedded engine, on the same throwaway primary.
set -eu
cd "$(dirname "$0")/.."
BUILD=${SWITCHYARD_BUILD:-build}
SECONDS_PER_ROUND=${BENCH_SECONDS:-5}
ROUNDS=${BENCH_ROUNDS:-5}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT INT TERM

cat > "$tmp/route.lua" <<'EOC'
return {
  clusters = { main = { nodes = {
    { name = "primary", role = "primary", conninfo = "host=127.0.0.1 port=1" },
    { name = "replica1", role = "replica", conninfo = "host=127.0.0.1 port=2" },
    { name = "replica2", role = "replica", conninfo = "host=127.0.0.1 port=3" },
  } } },
  policy_options = { balancer = "round_robin" },
}
EOC
echo "== routing decision (read/write split + round robin, Lua gateway, no network)"
"$BUILD/bench/route_bench" "$tmp/route.lua"

cat > "$tmp/run.sh" <<EOC
#!/bin/sh
cat > "$tmp/engine.lua" <<EOL
return {
  clusters = { main = { nodes = {
    { name = "primary", role = "primary",
      conninfo = "host=127.0.0.1 port=\$SY_PRIMARY_PORT dbname=postgres user=postgres" },
  } } },
  pool = { min = 16, max = 16 },
  log_level = "warn",
}
EOL
"$BUILD/bench/throughput_bench" "host=127.0.0.1 port=\$SY_PRIMARY_PORT dbname=postgres user=postgres" \
  "$tmp/engine.lua" $SECONDS_PER_ROUND $ROUNDS 16
EOC
echo "== SELECT 1, 16 in flight: plain async libpq loop vs embedded engine (same primary)"
luajit spec/support/testbed run --clusters main:0 -- sh "$tmp/run.sh"

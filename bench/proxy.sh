#!/bin/sh
# make bench: the proxy side by side with direct PostgreSQL, PgBouncer and
# Pgpool-II, on one throwaway primary (spec/support/testbed).
#
#  1. Throughput: `pgbench -S` (one primary-key SELECT per transaction), 16
#     clients on 2 threads, BENCH_SECONDS (10) per run, in the three query
#     modes (-M simple, extended, prepared), against each target.  Targets
#     take turns within a mode (direct, pgbouncer, pgpool, switchyard, then
#     the next mode) so drifting noise hits them alike; BENCH_ROUNDS (1)
#     repeats the whole sweep, each round starting one target later and
#     every second one backwards, and the median is reported.  For each proxy,
#     the CPU it burned (its whole process tree's run time, from the
#     scheduler's schedstat) per transaction: the cost a proxy adds on a box where it
#     shares cores with the server, which TPS alone hides on an idle machine.
#  2. Memory: RSS of each proxy holding BENCH_IDLE_CLIENTS (5000) idle
#     client connections.
#
# Run from anywhere: the outer half starts the test bed and runs the inner
# half (this same script with --inner) inside it.
set -eu
cd "$(dirname "$0")/.."

if [ "${1:-}" != --inner ]; then
    # shared_buffers: the scale-10 pgbench data (~160 MB) fits, so every
    # target reads from the same warm buffer cache.  max_connections: direct
    # (17) + PgBouncer (16) + Pgpool-II (up to num_init_children) +
    # switchyard (16) backends stay open at once.
    exec luajit spec/support/testbed run --clusters main:0 \
        --set main:shared_buffers=256MB --set main:max_connections=200 \
        -- sh bench/proxy.sh --inner
fi

BUILD=${SWITCHYARD_BUILD:-build}
SECS=${BENCH_SECONDS:-10}
ROUNDS=${BENCH_ROUNDS:-1}
IDLE=${BENCH_IDLE_CLIENTS:-5000}
WARMUP=${BENCH_WARMUP:-2}
CLIENTS=16
THREADS=2          # pgbench threads: one per core of the 2-core reference box
MODES="simple extended prepared"
TARGETS="direct pgbouncer pgpool switchyard"
# Server connections per pooler (PgBouncer's default_pool_size, switchyard's
# pool min = max).  16 = the client count: no pooler ever makes a client
# wait for a server connection, so the runs compare forwarding cost, not
# pool sizing; and direct has the same 16 backends.  (On 2 cores fewer
# backends could be faster for all; that is a tuning question, not this one.)
POOL=16
HOST=127.0.0.1
PRIMARY_PORT=${SY_PRIMARY_PORT:?run bench/proxy.sh without --inner}
TCK=$(getconf CLK_TCK)

tmp=$(mktemp -d)
# PgBouncer refuses to run as root and drops to postgres (-u), which must be
# able to reach its files.
chmod 755 "$tmp"
pids=""        # every long-running process this script started
cleanup() {
    for p in $pids; do stop_tree "$p"; done
    rm -rf "$tmp"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# A process holding thousands of sockets needs as many descriptors: raise
# the soft limit to the hard one for this shell and everything it starts
# (the proxies and idle_clients inherit it).  ulimit -n/-H are not POSIX but
# dash, bash and busybox sh all have them.
# shellcheck disable=SC3045
{
    hard=$(ulimit -H -n)
    [ "$hard" = unlimited ] && hard=$(cat /proc/sys/fs/nr_open)
    ulimit -n "$hard" 2>/dev/null || true
    nofile=$(ulimit -n)
}
if [ "$nofile" != unlimited ] && [ "$nofile" -lt $((IDLE + 100)) ]; then
    printf 'bench: open file limit %s is below %s idle clients + headroom\n' "$nofile" "$IDLE" >&2
fi

log() { printf '%s\n' "$*" >&2; }

# Ports below the kernel's ephemeral range (32768+) and the test bed's
# (20000-32000), skipping any in use; sets $port.
next_port=$((12000 + ($$ % 2000) * 3))
free_port() {
    while :; do
        next_port=$((next_port + 1))
        hex=$(printf '%04X' "$next_port")
        if ! grep -q ":$hex " /proc/net/tcp /proc/net/tcp6 2>/dev/null; then
            port=$next_port
            return 0
        fi
    done
}

# Prints "PID PPID TICKS" for every process; TICKS = utime+stime+cutime+
# cstime.  comm may hold spaces, so fields are counted after its last ")".
# cutime/cstime hold children already reaped, so a forking proxy's total
# stays right when a child exits.  cat, not awk, opens the files: a process
# may vanish between the glob and the read.
proc_table() {
    cat /proc/[0-9]*/stat 2>/dev/null |
        awk '{ pid = $1; sub(/^.*\) /, ""); print pid, $2, $12 + $13 + $14 + $15 }'
}
# The pids of ROOT and all its descendants.
tree_pids() {
    proc_table | awk -v root="$1" '
        { parent[$1] = $2 }
        END {
            sel[root] = 1; more = 1
            while (more) {
                more = 0
                for (p in parent) if (!(p in sel) && (parent[p] in sel)) { sel[p] = 1; more = 1 }
            }
            for (p in sel) if (p in parent) print p
        }'
}
# CPU nanoseconds used so far by ROOT and all its descendants: every
# thread's run time from /proc/PID/task/TID/schedstat, which the scheduler
# keeps to the nanosecond (utime and stime are sampled at clock ticks on
# this kernel, a few per cent of noise on a 10 s run), plus the ticks of
# children already reaped (cutime + cstime), which schedstat no longer
# shows.
tree_ns() {
    pids=$(tree_pids "$1" | tr '\n' ' ')
    live=0
    for p in $pids; do
        n=$(cat /proc/"$p"/task/*/schedstat 2>/dev/null | awk '{ s += $1 } END { printf "%.0f", s }')
        live=$((live + ${n:-0}))
    done
    reaped=$(for p in $pids; do cat /proc/"$p"/stat 2>/dev/null; done |
        awk -v hz="$TCK" '{ sub(/^.*\) /, ""); s += $14 + $15 } END { printf "%.0f", s * 1e9 / hz }')
    echo $((live + ${reaped:-0}))
}
rss_kb() { awk '/^VmRSS:/ { print $2 }' "/proc/$1/status" 2>/dev/null || echo 0; }

# Stops a process and anything it forked: the right signal for a fast clean
# shutdown, 5 s of grace, then KILL for whatever of the tree is left.
stop_tree() {
    tree=$(tree_pids "$1")
    sig=TERM
    [ "$1" = "${pgpool_pid:-}" ] && sig=INT   # Pgpool-II: INT = fast shutdown
    kill -"$sig" "$1" 2>/dev/null || true
    i=0
    while kill -0 "$1" 2>/dev/null && [ $i -lt 50 ]; do sleep 0.1; i=$((i + 1)); done
    for p in $tree; do kill -KILL "$p" 2>/dev/null || true; done
    wait "$1" 2>/dev/null || true
}

# Waits until PORT answers a query, up to 10 s, while PID lives.
ready() {
    i=0
    while [ $i -lt 100 ]; do
        kill -0 "$2" 2>/dev/null || return 1
        if PGCONNECT_TIMEOUT=2 psql -X -Atq -h $HOST -p "$1" -U postgres -d postgres \
            -c 'SELECT 1' >/dev/null 2>&1; then
            return 0
        fi
        sleep 0.1
        i=$((i + 1))
    done
    return 1
}

# A proxy that did not come up: its row says why.  Sets $why: the first line
# of its log that reads like an error, else the last one.
failed_start() {
    why=$(grep -m 1 -i -E 'error|fatal|unknown|cannot|could not|failed|usage' "$2" 2>/dev/null ||
        tail -n 1 "$2" 2>/dev/null || true)
    why=$(printf '%s' "$why" | cut -c1-100)
    [ -n "$why" ] || why="no output"
    log "$1: failed to start: $why"
}

# ---- the targets -----------------------------------------------------------

# Per target: port, pid of the proxy (empty: direct, or failed to start)
# and why it failed to start.
pgbouncer_port="" pgbouncer_pid="" pgbouncer_err=""
pgpool_port="" pgpool_pid="" pgpool_err=""
switchyard_port="" switchyard_pid="" switchyard_err=""
# Sets tport, tpid and terr for target $1.
target() {
    case $1 in
    direct) tport=$PRIMARY_PORT tpid="" terr="" ;;
    pgbouncer) tport=$pgbouncer_port tpid=$pgbouncer_pid terr=$pgbouncer_err ;;
    pgpool) tport=$pgpool_port tpid=$pgpool_pid terr=$pgpool_err ;;
    switchyard) tport=$switchyard_port tpid=$switchyard_pid terr=$switchyard_err ;;
    esac
}
# True when target $1 can be measured (direct, or a proxy that is up).
up() { target "$1"; [ "$1" = direct ] || [ -n "$tpid" ]; }

start_pgbouncer() {
    d="$tmp/pgbouncer"; mkdir -p "$d"
    free_port; pgbouncer_port=$port
    echo '"postgres" ""' > "$d/userlist.txt"
    cat > "$d/pgbouncer.ini" <<EOF
[databases]
postgres = host=$HOST port=$PRIMARY_PORT dbname=postgres user=postgres

[pgbouncer]
listen_addr = $HOST
listen_port = $pgbouncer_port
unix_socket_dir = $d
auth_type = trust
auth_file = $d/userlist.txt
pool_mode = transaction
default_pool_size = $POOL
max_client_conn = $((IDLE + 1000))
; pgbench (libpq) sends no extra_float_digits, JDBC and others do.
ignore_startup_parameters = extra_float_digits
log_connections = 0
log_disconnections = 0
EOF
    user=""
    if [ "$(id -u)" = 0 ]; then chown -R postgres "$d"; user="-u postgres"; fi
    # shellcheck disable=SC2086
    pgbouncer $user "$d/pgbouncer.ini" > "$d/log" 2>&1 &
    pgbouncer_pid=$!
    pids="$pids $pgbouncer_pid"
    ready "$pgbouncer_port" "$pgbouncer_pid" || { failed_start pgbouncer "$d/log"; pgbouncer_pid="" pgbouncer_err=$why; }
}

start_pgpool() {
    d="$tmp/pgpool"; mkdir -p "$d"
    free_port; pgpool_port=$port
    free_port; pcp_port=$port
    # Raw mode: one backend, no load balancing, no health checks, no query
    # cache, no pool_passwd (the server trusts local connections).
    # num_init_children: one process per client: 16 for pgbench's clients,
    # headroom for its extra setup connection and psql's readiness check.
    cat > "$d/pgpool.conf" <<EOF
backend_clustering_mode = 'raw'
listen_addresses = '$HOST'
port = $pgpool_port
unix_socket_directories = '$d'
pcp_listen_addresses = ''
pcp_port = $pcp_port
pcp_socket_dir = '$d'
wd_ipc_socket_dir = '$d'
pid_file_name = '$d/pgpool.pid'
logdir = '$d'
backend_hostname0 = '$HOST'
backend_port0 = $PRIMARY_PORT
backend_weight0 = 1
backend_flag0 = 'DISALLOW_TO_FAILOVER'
num_init_children = 32
max_pool = 1
reserved_connections = 0
connection_cache = on
load_balance_mode = off
memory_cache_enabled = off
use_watchdog = off
health_check_period = 0
sr_check_period = 0
failover_on_backend_error = off
enable_pool_hba = off
pool_passwd = ''
log_destination = 'stderr'
log_min_messages = warning
EOF
    : > "$d/pcp.conf"
    : > "$d/pool_hba.conf"
    # -n: foreground (its pid is ours to measure and stop); -D: ignore any
    # saved backend status.
    pgpool -n -D -f "$d/pgpool.conf" -F "$d/pcp.conf" -a "$d/pool_hba.conf" > "$d/log" 2>&1 &
    pgpool_pid=$!
    pids="$pids $pgpool_pid"
    ready "$pgpool_port" "$pgpool_pid" || { failed_start pgpool "$d/log"; pgpool_pid="" pgpool_err=$why; }
}

start_switchyard() {
    d="$tmp/switchyard"; mkdir -p "$d"
    free_port; switchyard_port=$port
    cat > "$d/config.lua" <<EOF
return {
  clusters = { main = { nodes = {
    { name = "primary", role = "primary",
      conninfo = "host=$HOST port=$PRIMARY_PORT dbname=postgres user=postgres" },
  } } },
  pool = { min = $POOL, max = $POOL },
  log_level = "warn",
  proxy = { listen = { "$HOST:$switchyard_port" }, max_clients = $((IDLE + 1000)) },
}
EOF
    if [ ! -x "$BUILD/switchyard" ]; then
        echo "no $BUILD/switchyard" > "$d/log"
        failed_start switchyard "$d/log"; switchyard_err=$why; return 0
    fi
    "$BUILD/switchyard" -c "$d/config.lua" > "$d/log" 2>&1 &
    switchyard_pid=$!
    pids="$pids $switchyard_pid"
    ready "$switchyard_port" "$switchyard_pid" || { failed_start switchyard "$d/log"; switchyard_pid="" switchyard_err=$why; }
}

# ---- one pgbench run -------------------------------------------------------

results="$tmp/results"   # target mode status tps cpu_us_per_tx errors message
: > "$results"

# run TARGET MODE ROUND: one measured pgbench run, one line in $results.
run() {
    target "$1"
    out="$tmp/out.$1.$2.$3"
    before=0
    [ -n "$tpid" ] && before=$(tree_ns "$tpid")
    # -n: no VACUUM first (the initial load did it; through a proxy it would
    # only add noise).
    rc=0
    pgbench -n -S -M "$2" -c $CLIENTS -j $THREADS -T "$SECS" \
        -h $HOST -p "$tport" -U postgres postgres > "$out" 2>&1 || rc=$?
    after=0
    [ -n "$tpid" ] && after=$(tree_ns "$tpid")
    tps=$(sed -n 's/^tps = \([0-9.]*\) (without initial connection time)$/\1/p' "$out")
    tx=$(sed -n 's/^number of transactions actually processed: \([0-9]*\).*/\1/p' "$out")
    failed=$(sed -n 's/^number of failed transactions: \([0-9]*\).*/\1/p' "$out")
    aborted=$(grep -c '^pgbench: error: client [0-9]* .*aborted' "$out" || true)
    first=$(grep -m 1 -i 'error' "$out" | sed 's/^pgbench: error: //' | tr -s ' \t' '  ' | cut -c1-120 || true)
    errors=$((${failed:-0} + aborted))
    if [ $rc -ne 0 ] || [ -z "$tps" ] || [ "${tx:-0}" -eq 0 ] || [ "$aborted" -gt 0 ]; then
        status=fails
        [ -n "$first" ] || first=$(tail -n 1 "$out" | cut -c1-120)
    else
        status=ok
    fi
    cpu=-
    if [ -n "$tpid" ] && [ "${tx:-0}" -gt 0 ]; then
        cpu=$(awk -v d=$((after - before)) -v n="$tx" 'BEGIN { printf "%.1f", d / 1e3 / n }')
    fi
    printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$1" "$2" "$status" "${tps:-0}" "$cpu" "$errors" "$first" >> "$results"
    if [ $status = ok ]; then
        log "  $1 -M $2: $tps tps, $cpu us/tx proxy CPU, $errors errors"
    else
        log "  $1 -M $2: fails: $first"
    fi
}

# ---- go --------------------------------------------------------------------

log "bench: pgbench -S -c $CLIENTS -j $THREADS, ${SECS}s per run, $ROUNDS round(s); pool $POOL server connections"
log "loading: pgbench -i -s 10 on the primary (port $PRIMARY_PORT)"
pgbench -i -q -s 10 -h $HOST -p "$PRIMARY_PORT" -U postgres postgres > "$tmp/init.log" 2>&1 ||
    { cat "$tmp/init.log" >&2; exit 1; }

start_pgbouncer
start_pgpool
start_switchyard

# Warm-up: every pooler opens its server connections and every backend reads
# the table once before anything is timed.
for t in $TARGETS; do
    if up "$t"; then
        pgbench -n -S -c $CLIENTS -j $THREADS -T "$WARMUP" -h $HOST -p "$tport" \
            -U postgres postgres > /dev/null 2>&1 || true
    fi
done

# The targets from position N (0-based) on, then the ones before it.
rotated() {
    from_n="" before_n=""
    i=0
    for t in $TARGETS; do
        if [ $i -lt "$1" ]; then before_n="$before_n $t"; else from_n="$from_n $t"; fi
        i=$((i + 1))
    done
    echo $from_n $before_n
}

# The words given, last first.
reversed() {
    out=""
    for t in "$@"; do out="$t $out"; done
    echo $out
}

# Each round starts the turn one target later, and every second round runs
# it backwards: rotating alone keeps each target behind the same one, and
# what runs just before a target (Pgpool-II leaves the server busy for a
# moment) should vary.  Over four rounds switchyard and PgBouncer each
# follow Pgpool-II twice.
ntargets=$(echo $TARGETS | wc -w)
r=1
while [ $r -le "$ROUNDS" ]; do
    for m in $MODES; do
        order=$(rotated $(((r - 1) % ntargets)))
        if [ $((r % 2)) -eq 0 ]; then order=$(reversed $order); fi
        log "round $r, -M $m: $order"
        for t in $order; do
            if up "$t"; then run "$t" "$m" "$r"; fi
        done
    done
    r=$((r + 1))
done

# ---- memory with idle clients ---------------------------------------------

# mem TARGET: RSS of the proxy before and while IDLE idle clients are
# attached; sets $val.
mem() {
    target "$1"
    if [ -z "$tpid" ]; then val="failed to start"; return 0; fi
    if [ ! -x "$BUILD/bench/idle_clients" ]; then val="no $BUILD/bench/idle_clients"; return 0; fi
    base=$(rss_kb "$tpid")
    log "  $1: open file limit $(awk '/^Max open files/ { print $4 }' "/proc/$tpid/limits")"
    out="$tmp/idle.$1"
    "$BUILD/bench/idle_clients" "host=$HOST port=$tport dbname=postgres user=postgres" "$IDLE" 120 > "$out" 2>&1 &
    ipid=$!
    pids="$pids $ipid"
    i=0
    while ! grep -q '^connected' "$out" && kill -0 $ipid 2>/dev/null && [ $i -lt 1300 ]; do
        sleep 0.1; i=$((i + 1))
    done
    sleep 1   # let the proxy finish whatever each login set off
    rss=$(rss_kb "$tpid")
    line=$(grep -m 1 '^connected' "$out" || tail -n 1 "$out")
    kill $ipid 2>/dev/null || true
    wait $ipid 2>/dev/null || true
    val=$(awk -v b="$base" -v r="$rss" -v n="$IDLE" -v l="$line" 'BEGIN {
        printf "%.1f MiB (%.1f MiB before: %.1f KiB per client); %s", r / 1024, b / 1024, (r - b) / n, l }')
    log "  $1: $val"
}
log "memory: $IDLE idle clients"
mem pgbouncer; mem_pgbouncer=$val
mem switchyard; mem_switchyard=$val
mem_pgpool="n/a (a process per client: $IDLE clients = $IDLE processes)"

# ---- the table -------------------------------------------------------------

printf '\nproxy benchmark: pgbench -S, %s clients / %s threads, %ss x %s round(s) per cell (median),\n' \
    $CLIENTS $THREADS "$SECS" "$ROUNDS"
printf 'pool %s server connections; %s cores; %s; %s; %s\n\n' "$POOL" "$(nproc)" \
    "$(pgbouncer --version | head -n 1)" "$(pgpool --version 2>&1 | head -n 1)" \
    "$(pgbench --version)"
printf '%-11s %-9s %10s %9s %13s  %s\n' target mode TPS "vs direct" "proxy CPU" errors
printf '%-11s %-9s %10s %9s %13s  %s\n' "" "" "" "" "us/tx" ""
for m in $MODES; do
    for t in $TARGETS; do
        if ! up "$t"; then
            printf '%-11s %-9s %10s  %s\n' "$t" "$m" "-" "failed to start: $terr"
            continue
        fi
        # Medians over rounds; any failing round makes the cell "fails".
        awk -F '\t' -v t="$t" -v m="$m" '
            function median(a, n,   i, j, x) {
                for (i = 2; i <= n; i++) { x = a[i]; for (j = i - 1; j >= 1 && a[j] > x; j--) a[j + 1] = a[j]; a[j + 1] = x }
                return n % 2 ? a[(n + 1) / 2] : (a[n / 2] + a[n / 2 + 1]) / 2
            }
            $2 != m { next }
            $1 == "direct" { nd++; d[nd] = $4 }
            $1 == t {
                n++; tps[n] = $4; if ($5 != "-") { nc++; cpu[nc] = $5 }
                err += $6
                if ($3 != "ok" && msg == "") msg = $7
            }
            END {
                if (n == 0) exit
                if (msg != "") { printf "%-11s %-9s %10s %9s %13s  %s\n", t, m, "fails", "-", "-", msg; exit }
                tp = median(tps, n); dt = nd ? median(d, nd) : 0
                printf "%-11s %-9s %10.0f %9s %13s  %d\n", t, m, tp,
                    (t == "direct" || dt == 0) ? "-" : sprintf("%.2f", tp / dt),
                    nc ? sprintf("%.1f", median(cpu, nc)) : "-", err
            }' "$results"
    done
done
printf '\nRSS with %s idle clients:\n' "$IDLE"
printf '  %-11s %s\n' pgbouncer "$mem_pgbouncer" pgpool "$mem_pgpool" switchyard "$mem_switchyard"

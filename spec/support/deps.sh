#!/bin/sh
# Installs what the build, the specs, the demo and the benchmarks need.
#
#  * Debian packages: run as root it installs what is missing with apt-get;
#    otherwise it prints the exact command and fails.
#  * node-postgres (npm `pg`) into spec/clients/node_modules, from the
#    committed spec/clients/package-lock.json (project-local, never global).
#
# A running PostgreSQL 15 server must never be upgraded underneath the specs:
# packages whose version is tied to the server's (libpq-dev,
# postgresql-client-15) are pinned to the installed postgresql-15's version,
# and before installing anything the install is simulated and refused if it
# would upgrade any PostgreSQL package already installed (the server, the
# client, libpq5 or postgresql-common).  pgbouncer, pgpool2 and
# python3-psycopg2 only ask for libpq5/postgresql-common at a minimum
# version, so on Debian 12 they install without upgrading either; the
# simulation is what proves it on each machine.
#
# Silent and quick when everything is already there.
set -eu
cd "$(dirname "$0")/../.."

# Build and core specs; PostgreSQL 15 for the test bed; client drivers for
# the client specs (psycopg2, the JDBC driver with a JDK: the specs run
# `java -cp /usr/share/java/postgresql.jar X.java`, single-file source
# launch, which needs the compiler a JRE lacks); PgBouncer and Pgpool-II for
# `make bench`; Patroni and etcd for the Patroni spec (spec/ha/patroni_spec.lua);
# libcurl reads Patroni's REST API (the curl tool: the Patroni test bed).
want="build-essential pkg-config libluajit-5.1-dev luajit libpq-dev libev-dev
      lua-cjson lua-busted lua-check libssl-dev libpg-query-dev libcurl4-openssl-dev
      postgresql-15 postgresql-client-15 clang libclang-rt-14-dev openssl
      python3-psycopg2 libpostgresql-jdbc-java openjdk-17-jdk-headless
      pgbouncer pgpool2 patroni etcd-server etcd-client curl"
# Node.js may come from elsewhere (NodeSource here); Debian's is only the
# fallback, and with it Debian's npm (NodeSource's nodejs bundles npm).
command -v node >/dev/null 2>&1 || want="$want nodejs"
command -v npm >/dev/null 2>&1 || want="$want npm"

# PostgreSQL packages that must keep their installed version.
protected="postgresql-15 postgresql-client-15 libpq5 libpq-dev postgresql-common postgresql-client-common"

missing=""
for p in $want; do
    if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
        missing="$missing $p"
    fi
done

if [ -n "$missing" ]; then
    # Pin libpq-dev and postgresql-client-15 to an already installed server.
    pinned=""
    server_version=$(dpkg-query -W -f='${Version}' postgresql-15 2>/dev/null || true)
    for p in $missing; do
        case "$p" in
        libpq-dev|postgresql-client-15)
            if [ -n "$server_version" ]; then p="$p=$server_version"; fi ;;
        esac
        pinned="$pinned $p"
    done
    if [ "$(id -u)" != 0 ]; then
        echo "switchyard needs these Debian packages:$missing" >&2
        echo "install them with: sudo apt-get install -y --no-install-recommends$pinned" >&2
        exit 1
    fi
    echo "installing:$pinned" >&2
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq >/dev/null || true
    # Dry run first: an upgrade shows as "Inst NAME [old-version] (new ...)".
    # shellcheck disable=SC2086
    sim=$(apt-get install -s --no-install-recommends $pinned 2>&1) || {
        printf '%s\n' "$sim" >&2
        exit 1
    }
    upgrades=""
    for p in $protected; do
        if printf '%s\n' "$sim" | grep -q "^Inst $p \["; then upgrades="$upgrades $p"; fi
    done
    if [ -n "$upgrades" ]; then
        echo "deps.sh: installing$pinned would upgrade installed PostgreSQL packages:$upgrades" >&2
        echo "upgrade them on purpose (stop the servers first) and run this again" >&2
        exit 1
    fi
    # shellcheck disable=SC2086
    apt-get install -y -q --no-install-recommends $pinned >/dev/null
fi

# node-postgres: `npm ci` installs exactly the locked versions, and only when
# they are not there yet (it wipes node_modules first, so it is not run on
# every `make test`).
if [ ! -f spec/clients/node_modules/pg/package.json ]; then
    echo "installing node-postgres into spec/clients/node_modules" >&2
    npm ci --prefix spec/clients --no-audit --no-fund --loglevel=error >/dev/null
fi

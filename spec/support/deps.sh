#!/bin/sh
# Installs the Debian packages the build, the specs and the demo need.
# Run as root it installs what is missing with apt-get; otherwise it prints
# the exact command and fails.  Server-side packages are pinned to the
# installed postgresql-15's version so an install can never upgrade a server
# that is running under the specs.
set -eu
want="build-essential pkg-config libluajit-5.1-dev luajit libpq-dev libev-dev lua-cjson lua-busted lua-check libssl-dev libpg-query-dev postgresql-15 postgresql-client-15 clang libclang-rt-14-dev openssl"
missing=""
for p in $want; do
    if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
        missing="$missing $p"
    fi
done
[ -z "$missing" ] && exit 0
# Pin libpq-dev and postgresql-15 to the version of an already installed server.
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
    echo "install them with: sudo apt-get install -y$pinned" >&2
    exit 1
fi
echo "installing:$pinned" >&2
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq >/dev/null || true
# shellcheck disable=SC2086
apt-get install -y -q --no-install-recommends $pinned >/dev/null

#!/bin/sh
# SPDX-License-Identifier: Apache-2.0
#
# Benchmark: CLIENTS clients reading capabilities, dimension members and permissions through
# visierd for SECONDS, once with the metadata cache off and once on (defaults), in the same
# run: requests answered, upstream calls the sim saw, and their ratio.
#
#   bench/cache-load.sh [BUILD_DIR] [SECONDS] [CLIENTS]
#
# Needs wrk and curl. Loopback only.
set -eu

build=$(cd "${1:-build}" && pwd)
seconds=${2:-60}
clients=${3:-50}
. "$(dirname "$0")/lib.sh"

start_sim
cat > "$work/paths.lua" <<'LUA'
local paths = { "/v1/admin/capabilities",
                "/v1/data/model/analytic-objects/Employee/dimensions/Location/members",
                "/v1/admin/permissions" }
local i = 0
request = function()
        i = i + 1
        return wrk.format("GET", paths[(i % #paths) + 1])
end
LUA
calls() { curl -s "http://127.0.0.1:$sim_port/_sim/counters" | sed -n 's/.*"calls_total":\([0-9]*\).*/\1/p'; }

phase() {
        name=$1
        start_visierd "http://127.0.0.1:$sim_port" "$2"
        before=$(calls)
        wrk -t2 -c"$clients" -d"${seconds}s" -s "$work/paths.lua" "http://127.0.0.1:$vd_port" > "$work/$name.wrk"
        after=$(calls)
        reqs=$(sed -n 's/^ *\([0-9]*\) requests in.*/\1/p' "$work/$name.wrk")
        non2xx=$(sed -n 's/.*Non-2xx or 3xx responses: *\([0-9]*\).*/\1/p' "$work/$name.wrk")
        printf '%-10s %12s %14s %8s\n' "$name" "$reqs" "$((after - before))" "${non2xx:-0}"
        eval "up_$name=$((after - before))"
        kill "$vd_pid"
        wait "$vd_pid" 2>/dev/null || true
        vd_pid=""
        rm -f "$work/visierd.db" "$work/visierd.db-wal" "$work/visierd.db-shm" "$work/visierd.db.lock"
}

echo "$clients clients, ${seconds}s, capabilities + members + permissions in turn, $(nproc) cores"
printf '%-10s %12s %14s %8s\n' "cache" "requests" "upstream calls" "non-2xx"
phase off "$(printf '[cache]\nmax_bytes = 0')"
phase on ""
awk -v a="$up_off" -v b="$up_on" 'BEGIN { printf "upstream calls without/with the cache: %.0f\n", a / (b ? b : 1) }'

#!/bin/sh
# SPDX-License-Identifier: Apache-2.0
#
# Benchmark: uncached proxied reads from CONNECTIONS clients while visierd's token rolls over
# every 2 seconds (token_lifetime = 2, refresh_margin = 1), against the same load with a token
# that lives an hour, in the same run: requests/s, p50, p99, non-2xx and the logins the sim
# counted. visierd's metadata cache is off so that every read uses the token.
#
#   bench/rollover.sh [BUILD_DIR] [DURATION_SECONDS] [CONNECTIONS]
#
# Needs wrk and curl. Loopback only.
set -eu

build=$(cd "${1:-build}" && pwd)
duration=${2:-20}
conns=${3:-32}
path=/v1/admin/capabilities
. "$(dirname "$0")/lib.sh"

start_sim
logins() { curl -s "http://127.0.0.1:$sim_port/_sim/counters" | sed -n 's/.*"logins":\([0-9]*\).*/\1/p'; }

phase() {
        name=$1
        start_visierd "http://127.0.0.1:$sim_port" "$(printf '%s\n[cache]\nmax_bytes = 0' "$2")"
        before=$(logins)
        wrk -t2 -c"$conns" -d"${duration}s" --latency "http://127.0.0.1:$vd_port$path" > "$work/$name.wrk"
        after=$(logins)
        rps=$(sed -n 's/^Requests\/sec: *\([0-9.]*\).*/\1/p' "$work/$name.wrk")
        p50=$(awk '$1=="50%"{print $2}' "$work/$name.wrk")
        p99=$(awk '$1=="99%"{print $2}' "$work/$name.wrk")
        non2xx=$(sed -n 's/.*Non-2xx or 3xx responses: *\([0-9]*\).*/\1/p' "$work/$name.wrk")
        errs=$(sed -n 's/.*Socket errors: *\(.*\)/\1/p' "$work/$name.wrk")
        printf '%-10s %12s %10s %10s %8s %8s  %s\n' "$name" "$rps" "$p50" "$p99" "${non2xx:-0}" \
                "$((after - before))" "${errs:-none}"
        kill "$vd_pid"
        wait "$vd_pid" 2>/dev/null || true
        vd_pid=""
        rm -f "$work/visierd.db" "$work/visierd.db-wal" "$work/visierd.db-shm" "$work/visierd.db.lock"
}

echo "GET $path, wrk -t2 -c$conns -d${duration}s, $(nproc) cores; cache off"
printf '%-10s %12s %10s %10s %8s %8s  %s\n' "token" "requests/s" "p50" "p99" "non-2xx" "logins" "socket errors"
phase hour "token_lifetime = 3600"
phase 2s "$(printf 'token_lifetime = 2\nrefresh_margin = 1')"

#!/bin/sh
# SPDX-License-Identifier: Apache-2.0
#
# Benchmark: GET through visierd against GET straight to visier-sim, in the same run on the
# same machine. Reports requests per second, p50 and p99 latency (wrk --latency), and the
# logins visier-sim counted during each phase.
#
#   bench/proxy-read.sh [BUILD_DIR] [DURATION_SECONDS] [CONNECTIONS]
#
# Needs wrk and curl (apt-get install wrk curl). Everything listens on 127.0.0.1 only.
set -eu

build=$(cd "${1:-build}" && pwd)
duration=${2:-10}
conns=${3:-32}
path=/v1/admin/capabilities
. "$(dirname "$0")/lib.sh"


make_secrets

"$build/visier-sim" --listen 127.0.0.1 --port 0 --port-file "$work/sim.port" --username bench \
        --apikey-file "$work/apikey" --password-file "$work/password" --rate-minute 0 --rate-hour 0 \
        2>"$work/sim.log" &
sim_pid=$!
wait_for "[ -s '$work/sim.port' ]"
sim_port=$(cat "$work/sim.port")

start_visierd "http://127.0.0.1:$sim_port"

logins() { curl -s "http://127.0.0.1:$sim_port/_sim/counters" | sed -n 's/.*"logins":\([0-9]*\).*/\1/p'; }
token=$(curl -s -H "apikey: $(cat "$work/apikey")" \
        --data-urlencode "username=bench" --data-urlencode "password=$(cat "$work/password")" \
        "http://127.0.0.1:$sim_port/v1/admin/visierSecureToken")

run() {
        name=$1
        shift
        before=$(logins)
        wrk -t2 -c"$conns" -d"${duration}s" --latency "$@" > "$work/$name.wrk"
        after=$(logins)
        rps=$(sed -n 's/^Requests\/sec: *\([0-9.]*\).*/\1/p' "$work/$name.wrk")
        p50=$(awk '$1=="50%"{print $2}' "$work/$name.wrk")
        p99=$(awk '$1=="99%"{print $2}' "$work/$name.wrk")
        errors=$(sed -n 's/.*Non-2xx or 3xx responses: *\([0-9]*\).*/\1/p' "$work/$name.wrk")
        printf '%-10s %12s %10s %10s %8s %8s\n' "$name" "$rps" "$p50" "$p99" "$((after - before))" "${errors:-0}"
        eval "rps_$name=$rps"
}

echo "GET $path, wrk -t2 -c$conns -d${duration}s, $(nproc) cores"
printf '%-10s %12s %10s %10s %8s %8s\n' "target" "requests/s" "p50" "p99" "logins" "non-2xx"
run direct -H "apikey: $(cat "$work/apikey")" -H "Cookie: VisierASIDToken=$token" "http://127.0.0.1:$sim_port$path"
run visierd "http://127.0.0.1:$vd_port$path"
run healthz "http://127.0.0.1:$vd_port/healthz"
awk -v a="$rps_visierd" -v b="$rps_direct" 'BEGIN { printf "visierd/direct throughput ratio: %.2f\n", a / b }'

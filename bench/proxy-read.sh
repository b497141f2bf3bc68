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
work=$(mktemp -d)
sim_pid=""
vd_pid=""
cleanup() {
        [ -n "$vd_pid" ] && kill "$vd_pid" 2>/dev/null && wait "$vd_pid" 2>/dev/null
        [ -n "$sim_pid" ] && kill "$sim_pid" 2>/dev/null && wait "$sim_pid" 2>/dev/null
        rm -rf "$work"
}
trap cleanup EXIT INT TERM

# Probe until a condition holds (bounded), instead of guessing with sleep.
wait_for() {
        i=0
        until eval "$1"; do
                i=$((i + 1))
                [ "$i" -gt 200 ] && { echo "bench: timed out waiting for: $1" >&2; exit 1; }
                sleep 0.05
        done
}

head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n' > "$work/apikey"
head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n' > "$work/password"
chmod 600 "$work/apikey" "$work/password"

"$build/visier-sim" --listen 127.0.0.1 --port 0 --port-file "$work/sim.port" --username bench \
        --apikey-file "$work/apikey" --password-file "$work/password" --rate-minute 0 --rate-hour 0 \
        2>"$work/sim.log" &
sim_pid=$!
wait_for "[ -s '$work/sim.port' ]"
sim_port=$(cat "$work/sim.port")

cat > "$work/visierd.conf" <<CONF
[visier]
base_url = http://127.0.0.1:$sim_port
username = bench
apikey_file = $work/apikey
password_file = $work/password
rate_limit_minute = 1000000
rate_limit_hour = 100000000
[listen]
port = 0
[store]
database = $work/visierd.db
CONF
"$build/visierd" --config "$work/visierd.conf" 2>"$work/visierd.log" &
vd_pid=$!
wait_for "grep -q 'serving Visier' '$work/visierd.log'"
vd_port=$(sed -n 's/.* on http:\/\/127\.0\.0\.1:\([0-9]*\)\/.*/\1/p' "$work/visierd.log" | head -n 1)
wait_for "curl -sf http://127.0.0.1:$vd_port/readyz >/dev/null"

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

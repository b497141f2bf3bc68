#!/bin/sh
# SPDX-License-Identifier: Apache-2.0
#
# Benchmark: an uncached proxied GET through visierd against nginx proxy_pass to the same
# visier-sim (keep-alive upstream, the same apikey and cookie injected) and against the sim
# directly, at several connection counts, in the same run: requests/s, p50, p99, socket
# errors, and the CPU time (user + system) the proxy and the sim spent per request. visierd's metadata cache is off ([cache] max_bytes = 0), so every read goes to the
# sim.
#
#   bench/proxy-nginx.sh [BUILD_DIR] [DURATION_SECONDS] [CONNECTIONS...]
#
# Needs wrk, curl and nginx (apt-get install wrk curl nginx-light). Loopback only.
set -eu

build=$(cd "${1:-build}" && pwd)
duration=${2:-10}
shift 2 2>/dev/null || shift $#
counts=${*:-1 32 256 1000}
path=/v1/admin/capabilities
. "$(dirname "$0")/lib.sh"

ulimit -n "$(ulimit -Hn)"
start_sim
start_visierd "http://127.0.0.1:$sim_port" "$(printf '[cache]\nmax_bytes = 0')"
token=$(curl -s -H "apikey: $(cat "$work/apikey")" \
        --data-urlencode "username=bench" --data-urlencode "password=$(cat "$work/password")" \
        "http://127.0.0.1:$sim_port/v1/admin/visierSecureToken")

nginx_port=$(free_port)
start_nginx "    upstream sim { server 127.0.0.1:$sim_port; keepalive 256; keepalive_requests 1000000; }
    server {
        listen 127.0.0.1:$nginx_port backlog=4096;
        location / {
            proxy_pass http://sim;
            proxy_http_version 1.1;
            proxy_set_header Connection \"\";
            proxy_set_header apikey \"$(cat "$work/apikey")\";
            proxy_set_header Cookie \"VisierASIDToken=$token\";
        }
    }"
wait_for "curl -sf http://127.0.0.1:$nginx_port$path > /dev/null"

# CPU seconds (user + system) used so far by the processes given.
cpu_of() {
        awk -v hz="$(getconf CLK_TCK)" '{ t += $14 + $15 } END { printf "%.4f", t / hz }' \
                $(for p in "$@"; do echo "/proc/$p/stat"; done)
}

# run NAME CONNS PIDS WRK_ARGS...: PIDS (comma-separated) are the proxy's processes, whose CPU
# time per request is reported beside the sim's.
run() {
        name=$1
        conns=$2
        pids=$(echo "$3" | tr , ' ')
        shift 3
        threads=2
        [ "$conns" -lt 2 ] && threads=1
        # shellcheck disable=SC2086
        p0=$( [ -n "$pids" ] && cpu_of $pids || echo 0); s0=$(cpu_of "$sim_pid")
        wrk -t"$threads" -c"$conns" -d"${duration}s" --latency "$@" > "$work/$name.wrk" 2>&1
        # shellcheck disable=SC2086
        p1=$( [ -n "$pids" ] && cpu_of $pids || echo 0); s1=$(cpu_of "$sim_pid")
        rps=$(sed -n 's/^Requests\/sec: *\([0-9.]*\).*/\1/p' "$work/$name.wrk")
        n=$(awk '/requests in/ { print $1 }' "$work/$name.wrk")
        p50=$(awk '$1=="50%"{print $2}' "$work/$name.wrk")
        p99=$(awk '$1=="99%"{print $2}' "$work/$name.wrk")
        errs=$(sed -n 's/.*Socket errors: *\(.*\)/\1/p' "$work/$name.wrk")
        non2xx=$(sed -n 's/.*Non-2xx or 3xx responses: *\([0-9]*\).*/\1/p' "$work/$name.wrk")
        cpu=$(awk -v a="$p0" -v b="$p1" -v n="$n" 'BEGIN { if (b > a) printf "%.1f", (b - a) * 1e6 / n; else print "-" }')
        simcpu=$(awk -v a="$s0" -v b="$s1" -v n="$n" 'BEGIN { printf "%.1f", (b - a) * 1e6 / n }')
        printf '%-8s %6s %12s %10s %10s %8s %9s %9s  %s\n' "$name" "$conns" "$rps" "$p50" "$p99" "${non2xx:-0}" \
                "$cpu" "$simcpu" "${errs:-none}"
        eval "rps_$name=$rps"
}

echo "GET $path, wrk -d${duration}s, $(nproc) cores; visierd's cache off"
printf '%-8s %6s %12s %10s %10s %8s %9s %9s  %s\n' "target" "conns" "requests/s" "p50" "p99" "non-2xx" \
        "cpu_us/r" "sim_us/r" "socket errors"
for c in $counts; do
        run direct "$c" "" -H "apikey: $(cat "$work/apikey")" -H "Cookie: VisierASIDToken=$token" \
                "http://127.0.0.1:$sim_port$path"
        run nginx "$c" "$(pgrep -d, -P "$(cat "$work/nginx.pid")")" "http://127.0.0.1:$nginx_port$path"
        run visierd "$c" "$vd_pid" "http://127.0.0.1:$vd_port$path"
        awk -v a="$rps_visierd" -v b="$rps_nginx" -v c="$c" \
                'BEGIN { printf "  %s connections: visierd/nginx %.2f\n", c, a / b }'
done
echo "sim TCP connections accepted in all: $(curl -s "http://127.0.0.1:$sim_port/_sim/counters" | sed -n 's/.*"connections":\([0-9]*\).*/\1/p')"

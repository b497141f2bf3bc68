#!/bin/sh
# SPDX-License-Identifier: Apache-2.0
#
# Benchmark: the reads visierd answers on its loop (GET /jobs/{id}, GET /status, a cached
# metadata GET) against nginx serving the very same bytes as static files with
# worker_processes 2, keep-alive on both, in the same run on the same machine. Rounds are
# interleaved (visierd, nginx, visierd, ...) and the medians compared.
#
#   bench/loop-reads.sh [BUILD_DIR] [DURATION_SECONDS] [CONNECTIONS] [ROUNDS]
#
# Needs wrk, curl and nginx (apt-get install wrk curl nginx-light); nginx is started by hand
# on a loopback port with a configuration in the scratch directory, never as a service.
set -eu

build=$(cd "${1:-build}" && pwd)
duration=${2:-10}
conns=${3:-32}
rounds=${4:-3}
. "$(dirname "$0")/lib.sh"

make_secrets
"$build/visier-sim" --listen 127.0.0.1 --port 0 --port-file "$work/sim.port" --username bench \
        --apikey-file "$work/apikey" --password-file "$work/password" --rate-minute 0 --rate-hour 0 \
        2>"$work/sim.log" &
sim_pid=$!
wait_for "[ -s '$work/sim.port' ]"
sim_port=$(cat "$work/sim.port")
start_visierd "http://127.0.0.1:$sim_port"
base="http://127.0.0.1:$vd_port"

# A job to read (the publisher sends it to the sim; its answer is recorded).
curl -s -H 'Content-Type: application/json' -H 'Prefer: wait=30' \
        -d '{"permissions":[{"displayName":"bench-loop-reads"}]}' "$base/v1/admin/permissions" > /dev/null
# nginx's workers run as an unprivileged user: they may pass through $work (its secret files
# stay 0600) and read www/.
chmod 0711 "$work"
mkdir -p "$work/www"
chmod 0755 "$work/www"
curl -s "$base/jobs/1" > "$work/www/job.json"
curl -s "$base/status" > "$work/www/status.json"
curl -s "$base/v1/admin/capabilities" > "$work/www/capabilities.json"

nginx_port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
cat > "$work/nginx.conf" <<CONF
worker_processes 2;
pid $work/nginx.pid;
error_log $work/nginx.err;
events { worker_connections 4096; }
http {
    access_log off;
    keepalive_requests 1000000;
    default_type application/json;
    server {
        listen 127.0.0.1:$nginx_port;
        root $work/www;
    }
}
CONF
nginx -c "$work/nginx.conf" -p "$work"
trap 'kill $(cat "$work/nginx.pid" 2>/dev/null) 2>/dev/null; bench_cleanup' EXIT INT TERM
wait_for "curl -sf http://127.0.0.1:$nginx_port/job.json > /dev/null"

rps() {
        wrk -t2 -c"$conns" -d"${duration}s" --latency "$1" > "$work/wrk.out"
        sed -n 's/^Requests\/sec: *\([0-9.]*\).*/\1/p' "$work/wrk.out"
}
median() { sort -n | awk '{ a[NR] = $1 } END { print a[int((NR + 1) / 2)] }'; }

echo "wrk -t2 -c$conns -d${duration}s, $rounds interleaved rounds, $(nproc) cores, medians"
printf '%-22s %8s %14s %14s %8s\n' "read" "bytes" "visierd req/s" "nginx req/s" "ratio"
for what in "jobs/1 job.json" "status status.json" "v1/admin/capabilities capabilities.json"; do
        vpath=${what% *}
        npath=${what#* }
        : > "$work/v"
        : > "$work/n"
        i=0
        while [ "$i" -lt "$rounds" ]; do
                rps "$base/$vpath" >> "$work/v"
                rps "http://127.0.0.1:$nginx_port/$npath" >> "$work/n"
                i=$((i + 1))
        done
        v=$(median < "$work/v")
        n=$(median < "$work/n")
        printf '%-22s %8s %14s %14s %8s\n' "/$vpath" "$(wc -c < "$work/www/$npath")" "$v" "$n" \
                "$(awk -v a="$v" -v b="$n" 'BEGIN { printf "%.2f", a / b }')"
done


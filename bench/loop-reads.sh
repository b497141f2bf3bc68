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

start_sim
start_visierd "http://127.0.0.1:$sim_port"
base="http://127.0.0.1:$vd_port"

# A job to read (the publisher sends it to the sim; its answer is recorded).
curl -s -H 'Content-Type: application/json' -H 'Prefer: wait=30' \
        -d '{"permissions":[{"displayName":"bench-loop-reads"}]}' "$base/v1/admin/permissions" > /dev/null
mkdir -p "$work/www"
chmod 0755 "$work/www"
curl -s "$base/jobs/1" > "$work/www/job.json"
curl -s "$base/status" > "$work/www/status.json"
curl -s "$base/v1/admin/capabilities" > "$work/www/capabilities.json"

nginx_port=$(free_port)
start_nginx "    server { listen 127.0.0.1:$nginx_port; root $work/www; }"
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


#!/bin/sh
# SPDX-License-Identifier: Apache-2.0
#
# Benchmark: /healthz latency while HOLDS writes wait (Prefer: wait) on a slow Visier, against
# /healthz with nothing held, in the same run; visierd's threads and RSS before and during.
#
#   bench/holds-probe.sh [BUILD_DIR] [HOLDS] [PROBE_SECONDS]
#
# Needs wrk and curl, and cc + libcurl to build bench/post-many.c. Loopback only.
set -eu

build=$(cd "${1:-build}" && pwd)
holds=${2:-1000}
probe=${3:-5}
here=$(cd "$(dirname "$0")" && pwd)
. "$here/lib.sh"

cc -O2 -o "$work/post-many" "$here/post-many.c" $(pkg-config --cflags --libs libcurl) -lpthread
start_sim
start_visierd "http://127.0.0.1:$sim_port"
base="http://127.0.0.1:$vd_port"

field() { sed -n "s/^$1:[[:space:]]*\([0-9]*\).*/\1/p" "/proc/$vd_pid/status"; }
p99() {
        wrk -t1 -c1 -d"${probe}s" --latency "$base/healthz" > "$work/wrk.out"
        awk '$1=="99%"{print $2}' "$work/wrk.out"
}
pending() {
        curl -s "$base/status" | sed -n 's/.*"queued":\([0-9]*\),"running":\([0-9]*\).*/\1 \2/p' | awk '{ print $1 + $2 }'
}

threads_before=$(field Threads)
rss_before=$(field VmRSS)
p99_idle=$(p99)

# Every write call publishes for a minute: the holds stay held while the probes run.
curl -s -X POST -d '{"publish_ms":60000}' "http://127.0.0.1:$sim_port/_sim/faults" > /dev/null
"$work/post-many" -H "Prefer: wait=90" -p hold "$base/v1/admin/permissions" "$holds" "$holds" > "$work/post.out" &
post_pid=$!
wait_for "[ \"\$(pending)\" -ge $holds ]" 1200
threads_during=$(field Threads)
rss_during=$(field VmRSS)
p99_held=$(p99)
answered=$(curl -s "$base/metrics" | sed -n 's/^visierd_http_requests_total{.*route="\/v1\/admin\/permissions".*} \([0-9]*\).*/\1/p' | awk '{ s += $1 } END { print s + 0 }')

echo "/healthz, wrk -t1 -c1 -d${probe}s, $(nproc) cores; $holds writes held (Prefer: wait) during the second probe"
printf '%-16s %10s %10s %12s\n' "phase" "p99" "threads" "RSS (KiB)"
printf '%-16s %10s %10s %12s\n' "nothing held" "$p99_idle" "$threads_before" "$rss_before"
printf '%-16s %10s %10s %12s\n' "$holds held" "$p99_held" "$threads_during" "$rss_during"
echo "writes answered while held: $answered (0: every one still held)"
curl -s -X POST -d '{"publish_ms":0}' "http://127.0.0.1:$sim_port/_sim/faults" > /dev/null
kill "$post_pid" 2>/dev/null || true

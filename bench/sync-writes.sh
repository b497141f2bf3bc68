#!/bin/sh
# SPDX-License-Identifier: Apache-2.0
#
# Benchmark: the latency a write answered as Visier answers it (the default: held until its
# job ends) adds for the caller. CLIENTS SDK-style clients (one keep-alive connection each,
# one create at a time, no Prefer header) write through visierd for SECONDS; beside them, in
# the same run (first, so that the two never write at once), one client sends the same create
# straight to the sim, one call at a time — the upstream call itself. The sim takes PUBLISH_MS for each write call, as Visier takes time
# to publish. visierd's own part is what its p50/p99 have on top of the direct call:
# batch_delay_ms, plus a call already in flight when the write arrived (one lane: never two
# publishes at once).
#
#   bench/sync-writes.sh [BUILD_DIR] [SECONDS] [CLIENTS] [PUBLISH_MS]
#
# Needs curl and a C compiler with libcurl (apt-get install curl libcurl4-openssl-dev).
set -eu

build=$(cd "${1:-build}" && pwd)
seconds=${2:-20}
clients=${3:-50}
publish_ms=${4:-200}
bench=$(cd "$(dirname "$0")" && pwd)
. "$(dirname "$0")/lib.sh"

cc -O2 -o "$work/post-many" "$bench/post-many.c" $(pkg-config --cflags --libs libcurl) -pthread
start_sim
sim=http://127.0.0.1:$sim_port
curl -sf -o /dev/null -d "{\"publish_ms\":$publish_ms}" "$sim/_sim/faults"
start_visierd "$sim" "request_timeout = 120"
delay=200 # [jobs] batch_delay_ms, the default this visierd runs with
token=$(curl -s -H "apikey: $(cat "$work/apikey")" \
        --data-urlencode "username=bench" --data-urlencode "password=$(cat "$work/password")" \
        "$sim/v1/admin/visierSecureToken")

field() { sed -n "s/.* $1=\([0-9.]*\).*/\1/p" "$2"; }

"$work/post-many" -p direct -d "$seconds" -H "apikey: $(cat "$work/apikey")" -H "Cookie: VisierASIDToken=$token" \
        "$sim/v1/admin/permissions" 0 1 > "$work/direct.out"
calls0=$(curl -s "$sim/_sim/counters" | sed -n 's/.*"write_calls":\([0-9]*\).*/\1/p')
overlaps0=$(curl -s "$sim/_sim/counters" | sed -n 's/.*"publish_overlaps":\([0-9]*\).*/\1/p')
"$work/post-many" -p sdk -d "$seconds" "$vd/v1/admin/permissions" 0 "$clients" > "$work/visierd.out"

echo "creates for ${seconds}s, sim publishing in ${publish_ms} ms a call, $(nproc) cores; batch_delay_ms = $delay"
printf '%-28s %8s %8s %10s %10s %10s\n' target clients answers "p50 (ms)" "p99 (ms)" "max (ms)"
for t in direct visierd; do
        n=$(sed -n 's/.* s200=\([0-9]*\).*/\1/p' "$work/$t.out")
        c=1
        [ "$t" = visierd ] && c=$clients
        printf '%-28s %8s %8s %10s %10s %10s\n' "$t" "$c" "${n:-0}" "$(field p50_ms "$work/$t.out")" \
                "$(field p99_ms "$work/$t.out")" "$(field max_ms "$work/$t.out")"
        grep -q ' errors=0 ' "$work/$t.out" || echo "bench: $t: $(cat "$work/$t.out")" >&2
done
awk -v d50="$(field p50_ms "$work/direct.out")" -v d99="$(field p99_ms "$work/direct.out")" \
    -v v50="$(field p50_ms "$work/visierd.out")" -v v99="$(field p99_ms "$work/visierd.out")" -v delay="$delay" 'BEGIN {
        printf "added by visierd over the direct call: p50 %.1f ms, p99 %.1f ms (batch_delay_ms %d + one call: p50 %.1f ms, p99 %.1f ms)\n",
               v50 - d50, v99 - d99, delay, delay + d50, delay + d99
}'
calls1=$(curl -s "$sim/_sim/counters" | sed -n 's/.*"write_calls":\([0-9]*\).*/\1/p')
overlaps1=$(curl -s "$sim/_sim/counters" | sed -n 's/.*"publish_overlaps":\([0-9]*\).*/\1/p')
echo "through visierd: $((calls1 - calls0)) write calls to the sim, $((overlaps1 - overlaps0)) overlapping publishes"

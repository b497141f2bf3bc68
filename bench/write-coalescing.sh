#!/bin/sh
# SPDX-License-Identifier: Apache-2.0
#
# Benchmark: single-permission creates sent straight to visier-sim against the same creates
# sent through visierd, in the same run on the same machine. visier-sim holds every
# permission write open for PUBLISH_MS, as Visier does while it publishes a version.
#
#   bench/write-coalescing.sh [BUILD_DIR] [CREATES] [CLIENTS] [PUBLISH_MS]
#
# For each phase (each against a fresh visier-sim) it reports the upstream write calls, the
# production versions published, the publishes that overlapped, the permissions that landed
# and the wall time; for visierd also the time until every 202 was back. Needs a C compiler,
# pkg-config and libcurl's headers (bench/post-many.c is compiled into a temporary directory),
# and curl. Everything listens on 127.0.0.1 only.
set -eu

build=$(cd "${1:-build}" && pwd)
creates=${2:-10000}
clients=${3:-50}
publish_ms=${4:-200}
bench=$(cd "$(dirname "$0")" && pwd)
. "$(dirname "$0")/lib.sh"


cc -O2 -o "$work/post-many" "$bench/post-many.c" $(pkg-config --cflags --libs libcurl) -pthread

make_secrets

# A fresh visier-sim, rate limits off, every write publishing for $publish_ms.
start_sim() {
        rm -f "$work/sim.port"
        "$build/visier-sim" --listen 127.0.0.1 --port 0 --port-file "$work/sim.port" --username bench \
                --apikey-file "$work/apikey" --password-file "$work/password" --rate-minute 0 --rate-hour 0 \
                --publish-ms "$publish_ms" 2>>"$work/sim.log" &
        sim_pid=$!
        wait_for "[ -s '$work/sim.port' ]"
        sim_port=$(cat "$work/sim.port")
        sim=http://127.0.0.1:$sim_port
}
stop_sim() {
        kill "$sim_pid" && wait "$sim_pid" || true
        sim_pid=""
}
sim_counter() { curl -sf "$sim/_sim/counters" | json_int "$1"; }
sim_permissions() { curl -sf "$sim/_sim/permissions" | json_int count; }
snapshot() {
        eval "${1}_calls=\$(sim_counter write_calls)"
        eval "${1}_versions=\$(sim_counter production_version)"
        eval "${1}_overlaps=\$(sim_counter publish_overlaps)"
        eval "${1}_perms=\$(sim_permissions)"
}
# row NAME OK ACCEPT_SECONDS WALL_SECONDS: one line of the table, deltas from the snapshots.
row() {
        printf '%-8s %8s %8s %11s %9s %9s %14s %7s %9s %9s\n' "$1" "$creates" "$2" \
                "$((after_calls - before_calls))" "$((after_versions - before_versions))" \
                "$((after_overlaps - before_overlaps))" "$(sim_counter writes_in_flight_max)" \
                "$((after_perms - before_perms))" "$3" "$4"
        eval "calls_$1=$((after_calls - before_calls))"
        eval "versions_$1=$((after_versions - before_versions))"
        eval "wall_$1=$4"
}

echo "$creates single-permission creates from $clients clients, publish_ms=$publish_ms, $(nproc) cores, load $(cut -d" " -f1-3 /proc/loadavg)"
printf '%-8s %8s %8s %11s %9s %9s %14s %7s %9s %9s\n' "target" "creates" "2xx" "write_calls" "versions" \
        "overlaps" "in_flight_max" "landed" "accept_s" "wall_s"

# (a) direct: every client calls visier-sim itself, one permission per call.
start_sim
token=$(curl -sf -H "apikey: $(cat "$work/apikey")" \
        --data-urlencode "username=bench" --data-urlencode "password=$(cat "$work/password")" \
        "$sim/v1/admin/visierSecureToken")
snapshot before
"$work/post-many" -p direct -H "apikey: $(cat "$work/apikey")" -H "Cookie: VisierASIDToken=$token" \
        "$sim/v1/admin/permissions" "$creates" "$clients" > "$work/direct.out"
snapshot after
elapsed=$(sed -n 's/.*elapsed=\([0-9.]*\).*/\1/p' "$work/direct.out")
ok=$(sed -n 's/.* s200=\([0-9]*\).*/\1/p' "$work/direct.out")
row direct "${ok:-0}" "-" "$elapsed"
stop_sim

# (b) visierd: the same creates, each answered 202 once committed (the client asks for
# Prefer: respond-async; without it the answer is held until the job ends); visierd's publisher
# gathers them into bulk calls. Wall time ends when no job is queued or running.
start_sim
start_visierd "$sim"

snapshot before
t0=$(now)
"$work/post-many" -p visierd -H "Prefer: respond-async" "$vd/v1/admin/permissions" "$creates" "$clients" > "$work/visierd.out"
wait_for drained 12000 # up to 10 minutes
t1=$(now)
snapshot after
accept=$(sed -n 's/.*elapsed=\([0-9.]*\).*/\1/p' "$work/visierd.out")
ok=$(sed -n 's/.* s202=\([0-9]*\).*/\1/p' "$work/visierd.out")
row visierd "${ok:-0}" "$accept" "$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.3f", b - a }')"
echo "visierd jobs at the end: $(vd_jobs)"

awk -v cd="$calls_direct" -v cv="$calls_visierd" -v vd="$versions_direct" -v vv="$versions_visierd" \
        -v wd="$wall_direct" -v wv="$wall_visierd" 'BEGIN {
        printf "write calls direct/visierd: %.0f\n", cd / (cv > 0 ? cv : 1)
        printf "production versions direct/visierd: %.0f\n", vd / (vv > 0 ? vv : 1)
        printf "wall time visierd/direct: %.2f\n", wv / wd
}'
for f in direct visierd; do
        grep -q ' errors=0 ' "$work/$f.out" || echo "bench: $f: $(cat "$work/$f.out")" >&2
done
echo "load at the end: $(cut -d" " -f1-3 /proc/loadavg)"

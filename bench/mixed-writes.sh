#!/bin/sh
# SPDX-License-Identifier: Apache-2.0
#
# Benchmark: a mixed stream of permission changes (creates, updates, deletes and user
# assignments, in turn, each on a permission of its own) sent straight to visier-sim against
# the same stream sent through visierd, in the same run on the same machine. visier-sim holds
# every publishing write open for PUBLISH_MS, as Visier does while it publishes a version.
#
#   bench/mixed-writes.sh [BUILD_DIR] [CHANGES] [CLIENTS] [PUBLISH_MS]
#
# Each phase gets a fresh visier-sim holding 3 * CHANGES / 4 permissions made beforehand
# (one bulk create per 1,000, not counted) for the updates, deletes and assignments to name.
# It reports the upstream write calls, the production versions, the publishes that
# overlapped, the largest number of writes in flight and the wall time; for visierd also the
# time until every 202 was back (the clients ask for Prefer: respond-async), in its default
# mode and in project mode ([jobs] publish = project: each round of bulk calls goes into one
# draft project, published once). In project mode write_calls counts the bulk calls into the
# drafts; the drafts' creation and commits are in draft_calls.
# Needs a C compiler, pkg-config and libcurl's headers (bench/post-many.c is compiled into a
# temporary directory), and curl. Everything listens on 127.0.0.1 only.
set -eu

build=$(cd "${1:-build}" && pwd)
changes=${2:-10000}
clients=${3:-50}
publish_ms=${4:-200}
bench=$(cd "$(dirname "$0")" && pwd)
. "$(dirname "$0")/lib.sh"


cc -O2 -o "$work/post-many" "$bench/post-many.c" $(pkg-config --cflags --libs libcurl) -pthread
make_secrets

start_mixed_sim() {
        rm -f "$work/sim.port"
        "$build/visier-sim" --listen 127.0.0.1 --port 0 --port-file "$work/sim.port" --username bench \
                --apikey-file "$work/apikey" --password-file "$work/password" --rate-minute 0 --rate-hour 0 \
                2>>"$work/sim.log" &
        sim_pid=$!
        wait_for "[ -s '$work/sim.port' ]"
        sim=http://127.0.0.1:$(cat "$work/sim.port")
        token=$(curl -sf --data-urlencode "username=bench" --data-urlencode "password=$(cat "$work/password")" \
                "$sim/v1/admin/visierSecureToken")
        # The permissions the stream names, made in bulk before publish_ms is set.
        : > "$work/ids"
        need=$((changes / 4 * 3 + 3))
        made=0
        while [ "$made" -lt "$need" ]; do
                n=$((need - made > 1000 ? 1000 : need - made))
                python3 -c "import json,sys; print(json.dumps({'permissions':[{'displayName':'pre-%d' % (int(sys.argv[1]) + i)} for i in range(int(sys.argv[2]))]}))" \
                        "$made" "$n" > "$work/pre.json"
                curl -sf -X POST -H "apikey: $(cat "$work/apikey")" -H "Cookie: VisierASIDToken=$token" \
                        -H "Content-Type: application/json" --data-binary @"$work/pre.json" "$sim/v1/admin/permissions" |
                        python3 -c "import json,sys; [print(s['permissionId']) for s in json.load(sys.stdin)['successes']]" \
                                >> "$work/ids"
                made=$((made + n))
        done
        curl -sf -X POST -d '{}' "$sim/_sim/reset" > /dev/null
        curl -sf -X POST -H "Content-Type: application/json" -d "{\"publish_ms\":$publish_ms}" "$sim/_sim/faults" > /dev/null
}
stop_mixed_sim() {
        kill "$sim_pid" && wait "$sim_pid" || true
        sim_pid=""
}
sim_counter() { curl -sf "$sim/_sim/counters" | json_int "$1"; }
draft_calls() { # POST /v1/admin/projects and POST /v1/admin/projects/{id}
        curl -sf "$sim/_sim/counters" | python3 -c "import json,sys; c=json.load(sys.stdin)['calls']; \
print(sum(n for p, n in c.items() if p.startswith('/v1/admin/projects')))"
}
row() { # NAME ACCEPT_S WALL_S
        printf '%-16s %8s %11s %11s %9s %9s %14s %9s %9s\n' "$1" "$changes" "$(sim_counter write_calls)" \
                "$(draft_calls)" "$(sim_counter production_version)" "$(sim_counter publish_overlaps)" \
                "$(sim_counter writes_in_flight_max)" "$2" "$3"
        eval "calls_$1=$(sim_counter write_calls) versions_$1=$(sim_counter production_version) wall_$1=$3"
}
# through_visierd NAME EXTRA_CONFIG: the stream through a fresh visierd (and database).
through_visierd() {
        start_mixed_sim
        rm -f "$work"/visierd.db*
        start_visierd "$sim" "$2"
        t0=$(now)
        "$work/post-many" -m "$work/ids" -p visierd -H "Prefer: respond-async" "$vd" "$changes" "$clients" \
                > "$work/$1.out"
        wait_for drained 12000 # up to 10 minutes
        t1=$(now)
        row "$1" "$(sed -n 's/.*elapsed=\([0-9.]*\).*/\1/p' "$work/$1.out")" \
                "$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.3f", b - a }')"
        echo "$1 jobs at the end: $(vd_jobs)"
        kill "$vd_pid" && wait "$vd_pid" || true
        vd_pid=""
        stop_mixed_sim
}

echo "$changes mixed changes (creates, updates, deletes, assignments) from $clients clients, publish_ms=$publish_ms, $(nproc) cores, load $(cut -d" " -f1-3 /proc/loadavg)"
printf '%-16s %8s %11s %11s %9s %9s %14s %9s %9s\n' target changes write_calls draft_calls versions overlaps \
        in_flight_max accept_s wall_s

# (a) direct: every client calls visier-sim itself, one change per call.
start_mixed_sim
"$work/post-many" -m "$work/ids" -p direct -H "apikey: $(cat "$work/apikey")" \
        -H "Cookie: VisierASIDToken=$token" "$sim" "$changes" "$clients" > "$work/direct.out"
row direct - "$(sed -n 's/.*elapsed=\([0-9.]*\).*/\1/p' "$work/direct.out")"
stop_mixed_sim

# (b) visierd, default mode: the same stream, each change answered 202 once committed; the
# publisher coalesces each kind into bulk calls, past the changes of other kinds.
through_visierd visierd_default ""
# (c) visierd, project mode: the same bulk calls, a round of them in one draft project.
through_visierd visierd_project "[jobs]
publish = project"

awk -v cd="$calls_direct" -v cv="$calls_visierd_default" -v vd="$versions_direct" -v vv="$versions_visierd_default" \
        -v vp="$versions_visierd_project" -v wd="$wall_direct" -v wv="$wall_visierd_default" \
        -v wp="$wall_visierd_project" 'BEGIN {
        printf "write calls direct/visierd_default: %.0f\n", cd / (cv > 0 ? cv : 1)
        printf "production versions direct/visierd_default: %.0f\n", vd / (vv > 0 ? vv : 1)
        printf "production versions direct/visierd_project: %.0f\n", vd / (vp > 0 ? vp : 1)
        printf "wall time visierd_default/direct: %.2f\n", wv / wd
        printf "wall time visierd_project/direct: %.2f\n", wp / wd
}'
for f in direct visierd_default visierd_project; do
        grep -q ' errors=0 ' "$work/$f.out" || echo "bench: $f: $(cat "$work/$f.out")" >&2
        echo "$f client: $(cat "$work/$f.out")"
done
echo "load at the end: $(cut -d" " -f1-3 /proc/loadavg)"

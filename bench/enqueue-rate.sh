#!/bin/sh
# SPDX-License-Identifier: Apache-2.0
#
# Benchmark: how many single-permission creates a second visierd accepts (202, committed to
# its SQLite queue), against two floors with the same journal_mode=WAL and synchronous=FULL
# on the same filesystem: a plain loop of single-row SQLite inserts, one transaction each,
# and the grouped floor, where CLIENTS producers wait for their rows as visierd's clients
# wait for their 202s and one writer commits all rows waiting in one transaction.
#
#   bench/enqueue-rate.sh [BUILD_DIR] [SECONDS] [CLIENTS]
#
# Phases, in one run:
#   sqlite           bench/sqlite-insert-loop.c: one thread, 300-byte rows, for SECONDS;
#   sqlite-grouped   bench/sqlite-insert-loop.c -g CLIENTS: the same rows, grouped;
#   store-async      bench/store-submit-rate.c: the build's job store alone, no HTTP, CLIENTS
#                    threads each with one store_job_submit_async() in flight (store-blocking:
#                    store_job_submit(), for a build without the asynchronous call);
#   visierd-parked   CLIENTS clients POST to visierd for SECONDS while its publisher is parked
#                    in a single upstream call that visier-sim holds open for SECONDS + 2 s,
#                    so the queue takes writes without the publisher competing;
#   visierd-publish  the same with visier-sim publishing each write in 200 ms, so the
#                    publisher drains the queue in bulk calls while clients keep writing;
#   visierd-wrk      visierd-parked with wrk (bench/post-creates.lua) as the client instead of
#                    post-many, whose libcurl threads take most of a core on a 2-core machine;
#   nginx-return     the same wrk client against nginx (worker_processes 2) answering every
#                    POST with `return 202` and a body of the size of visierd's 202: the
#                    ceiling of any HTTP answer on this machine, with no parse and no disk.
# The last two run only where wrk and nginx are installed.
# Each visierd phase starts a fresh visierd on a fresh database. Needs a C compiler,
# pkg-config, libcurl's and SQLite's headers, and curl. Everything listens on 127.0.0.1 only.
set -eu

build=$(cd "${1:-build}" && pwd)
seconds=${2:-10}
clients=${3:-64}
bench=$(cd "$(dirname "$0")" && pwd)
. "$(dirname "$0")/lib.sh"


cc -O2 -o "$work/post-many" "$bench/post-many.c" $(pkg-config --cflags --libs libcurl) -pthread
cc -O2 -o "$work/sqlite-insert-loop" "$bench/sqlite-insert-loop.c" $(pkg-config --cflags --libs sqlite3) -pthread

make_secrets

"$build/visier-sim" --listen 127.0.0.1 --port 0 --port-file "$work/sim.port" --username bench \
        --apikey-file "$work/apikey" --password-file "$work/password" --rate-minute 0 --rate-hour 0 \
        2>"$work/sim.log" &
sim_pid=$!
wait_for "[ -s '$work/sim.port' ]"
sim=http://127.0.0.1:$(cat "$work/sim.port")
set_publish_ms() { curl -sf -o /dev/null -d "{\"publish_ms\":$1}" "$sim/_sim/faults"; }

# A fresh visierd on a fresh database in $work (the same filesystem as the SQLite baseline).
fresh_visierd() {
        rm -f "$work"/visierd.db*
        # max_pending well above what SECONDS of intake can queue, so the phase measures the
        # rate of 202s and not the default cap of 100,000 pending jobs.
        start_visierd "$sim" "request_timeout = 3600
[jobs]
max_pending = 100000000"
}
stop_visierd() {
        kill "$vd_pid" && wait "$vd_pid" || true
        vd_pid=""
}

line() { printf '%-16s %8s %8s %10s %8s %11s %6s %12s %12s\n' "$@"; }
# CPU seconds (user + system) a process has used so far.
proc_cpu() { awk -v hz="$(getconf CLK_TCK)" '{ printf "%.2f", ($14 + $15) / hz }' "/proc/$1/stat"; }

echo "single creates for ${seconds}s, $clients clients, $(nproc) cores, $(df -T "$work" | awk 'NR==2 { print $2 }') under $work, load $(cut -d" " -f1-3 /proc/loadavg)"
line target seconds clients accepted refused "accepted/s" calls server_cpu_s client_cpu_s

# (a) baseline: SQLite alone.
"$work/sqlite-insert-loop" "$work/baseline.db" "$seconds" 300 > "$work/sqlite.out"
n=$(sed -n 's/.*inserts=\([0-9]*\).*/\1/p' "$work/sqlite.out")
elapsed=$(sed -n 's/.*elapsed=\([0-9.]*\).*/\1/p' "$work/sqlite.out")
rate_sqlite=$(sed -n 's/.*rate=\([0-9.]*\).*/\1/p' "$work/sqlite.out")
line sqlite "$elapsed" 1 "$n" 0 "$rate_sqlite" "-" "$(sed -n 's/.*cpu=\([0-9.]*\).*/\1/p' "$work/sqlite.out")" "-"
rm -f "$work"/baseline.db*

# (a') the grouped floor: CLIENTS producers, every waiting row in one transaction.
"$work/sqlite-insert-loop" -g "$clients" "$work/grouped.db" "$seconds" 300 > "$work/grouped.out"
n=$(sed -n 's/.*inserts=\([0-9]*\).*/\1/p' "$work/grouped.out")
elapsed=$(sed -n 's/.*elapsed=\([0-9.]*\).*/\1/p' "$work/grouped.out")
rate_grouped=$(sed -n 's/.*rate=\([0-9.]*\).*/\1/p' "$work/grouped.out")
line sqlite-grouped "$elapsed" "$clients" "$n" 0 "$rate_grouped" "-" "$(sed -n 's/.*cpu=\([0-9.]*\).*/\1/p' "$work/grouped.out")" "-"
echo "  (rows per commit: $(sed -n 's/.*rows_per_commit=\([0-9.]*\).*/\1/p' "$work/grouped.out"))"
rm -f "$work"/grouped.db*

# (a'') the job store alone: the asynchronous submission if this build has it.
store_phase=store-async
blocking=""
if ! nm "$build/libvisierd-core.a" 2>/dev/null | grep -q ' T store_job_submit_async$'; then
        store_phase=store-blocking
        blocking=-DSTORE_SUBMIT_BLOCKING
fi
cc -O2 $blocking -o "$work/store-submit-rate" -I"$bench/../src/visierd" -I"$bench/../src/shared" -I"$build" \
        "$bench/store-submit-rate.c" "$build/libvisierd-core.a" \
        $(pkg-config --cflags --libs jansson sqlite3 libsystemd libcurl libmicrohttpd libpq) -linih -lm -pthread
"$work/store-submit-rate" "$work/store.db" "$seconds" "$clients" > "$work/store.out"
n=$(sed -n 's/.*inserts=\([0-9]*\).*/\1/p' "$work/store.out")
elapsed=$(sed -n 's/.*elapsed=\([0-9.]*\).*/\1/p' "$work/store.out")
rate_store=$(sed -n 's/.*rate=\([0-9.]*\).*/\1/p' "$work/store.out")
line "$store_phase" "$elapsed" "$clients" "$n" "$(sed -n 's/.*failed=\([0-9]*\).*/\1/p' "$work/store.out")" \
        "$rate_store" "-" "$(sed -n 's/.*cpu=\([0-9.]*\).*/\1/p' "$work/store.out")" "-"
rm -f "$work"/store.db*

# (b) visierd, publisher parked, then (c) visierd, publisher publishing.
run_visierd() {
        name=$1
        set_publish_ms "$2"
        fresh_visierd
        cpu0=$(proc_cpu "$vd_pid")
        "$work/post-many" -p "$name" -H "Prefer: respond-async" -d "$seconds" "$vd/v1/admin/permissions" 0 "$clients" > "$work/$name.out"
        cpu1=$(proc_cpu "$vd_pid")
        status=$(curl -sf "$vd/status")
        stop_visierd
        # Let the sim finish the call that visierd left behind before the next phase.
        wait_for "[ \"\$(curl -sf $sim/_sim/counters | json_int writes_in_flight)\" = 0 ]" $((seconds * 20 + 400))
        elapsed=$(sed -n 's/.*elapsed=\([0-9.]*\).*/\1/p' "$work/$name.out")
        requests=$(sed -n 's/.*requests=\([0-9]*\).*/\1/p' "$work/$name.out")
        ok=$(sed -n 's/.* s202=\([0-9]*\).*/\1/p' "$work/$name.out")
        ok=${ok:-0}
        rate=$(awk -v n="$ok" -v t="$elapsed" 'BEGIN { printf "%.1f", n / t }')
        line "$name" "$elapsed" "$clients" "$ok" "$((requests - ok))" "$rate" \
                "$(echo "$status" | sed -n 's/.*"publisher":{\([^}]*\)}.*/\1/p' | json_int write_calls)" \
                "$(awk -v a="$cpu0" -v b="$cpu1" 'BEGIN { printf "%.2f", b - a }')" \
                "$(sed -n 's/.*cpu=\([0-9.]*\).*/\1/p' "$work/$name.out")"
        eval "rate_$(echo "$name" | tr -d -)=$rate"
        grep -q ' s202=[0-9]* errors=0 ' "$work/$name.out" || echo "bench: $name: $(cat "$work/$name.out")" >&2
}
run_visierd visierd-parked $(((seconds + 2) * 1000))
run_visierd visierd-publish 200

# (d) the lighter client: wrk, against visierd parked and against nginx's `return 202`.
wrk_rps() { sed -n 's/^Requests\/sec: *\([0-9.]*\).*/\1/p' "$1"; }
wrk_ok() { grep -q '^errors connect=0 read=0 write=0 status=0 timeout=0$' "$1" || echo "bench: $(cat "$1")" >&2; }
rate_visierdwrk="" rate_nginx=""
if command -v wrk > /dev/null && command -v nginx > /dev/null; then
        set_publish_ms $(((seconds + 2) * 1000))
        fresh_visierd
        cpu0=$(proc_cpu "$vd_pid")
        wrk -t2 -c"$clients" -d"${seconds}s" -s "$bench/post-creates.lua" "$vd/v1/admin/permissions" > "$work/vwrk.out"
        cpu1=$(proc_cpu "$vd_pid")
        status=$(curl -sf "$vd/status")
        curl -sf -H 'Prefer: respond-async' -H 'Content-Type: application/json' \
                -d '{"permissions":[{"displayName":"w1-00000000"}]}' "$vd/v1/admin/permissions" > "$work/202.json"
        stop_visierd
        wait_for "[ \"\$(curl -sf $sim/_sim/counters | json_int writes_in_flight)\" = 0 ]" $((seconds * 20 + 400))
        wrk_ok "$work/vwrk.out"
        rate_visierdwrk=$(wrk_rps "$work/vwrk.out")
        line visierd-wrk "$seconds" "$clients" "$(sed -n 's/^ *\([0-9]*\) requests in.*/\1/p' "$work/vwrk.out")" 0 \
                "$rate_visierdwrk" "$(echo "$status" | sed -n 's/.*"publisher":{\([^}]*\)}.*/\1/p' | json_int write_calls)" \
                "$(awk -v a="$cpu0" -v b="$cpu1" 'BEGIN { printf "%.2f", b - a }')" "-"

        nginx_port=$(free_port)
        start_nginx "    server { listen 127.0.0.1:$nginx_port; location / { return 202 '$(cat "$work/202.json")'; } }"
        wait_for "curl -s -o /dev/null -w '%{http_code}' -d x http://127.0.0.1:$nginx_port/ | grep -q 202"
        wrk -t2 -c"$clients" -d"${seconds}s" -s "$bench/post-creates.lua" "http://127.0.0.1:$nginx_port/v1/admin/permissions" > "$work/nwrk.out"
        kill "$(cat "$work/nginx.pid")" && rm -f "$work/nginx.pid"
        wrk_ok "$work/nwrk.out"
        rate_nginx=$(wrk_rps "$work/nwrk.out")
        line nginx-return "$seconds" "$clients" "$(sed -n 's/^ *\([0-9]*\) requests in.*/\1/p' "$work/nwrk.out")" 0 \
                "$rate_nginx" "-" "-" "-"
        echo "  (body of $(wc -c < "$work/202.json") bytes, visierd's 202)"
fi

awk -v s="$rate_sqlite" -v g="$rate_grouped" -v p="$rate_visierdparked" -v q="$rate_visierdpublish" 'BEGIN {
        printf "visierd-parked/sqlite: %.2f\n", p / s
        printf "visierd-publish/sqlite: %.2f\n", q / s
        printf "visierd-parked/sqlite-grouped: %.2f\n", p / g
        printf "visierd-publish/sqlite-grouped: %.2f\n", q / g
}'
awk -v g="$rate_grouped" -v t="$rate_store" -v name="$store_phase" 'BEGIN { printf "%s/sqlite-grouped: %.2f\n", name, t / g }'
if [ -n "$rate_nginx" ]; then
        awk -v g="$rate_grouped" -v w="$rate_visierdwrk" -v n="$rate_nginx" 'BEGIN {
                printf "visierd-wrk/sqlite-grouped: %.2f\n", w / g
                printf "nginx-return/sqlite-grouped: %.2f\n", n / g
                printf "visierd-wrk/nginx-return: %.2f\n", w / n
        }'
fi
echo "load at the end: $(cut -d" " -f1-3 /proc/loadavg)"

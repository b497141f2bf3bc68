#!/bin/sh
# SPDX-License-Identifier: Apache-2.0
#
# Benchmark: what GET /status and GET /jobs?state=… cost with a small and with a large job
# table (1 k and 1 M jobs by default), and the large/small ratio of each — flat cost means a
# ratio near 1. With a second build directory, that build (the baseline) runs the same
# phases in the same run, before the candidate.
#
#   bench/store-scale.sh [BUILD_DIR] [SECONDS] [BASELINE_BUILD_DIR]
#
# The databases are made once: the oldest build given starts on an empty database (so it
# has that build's schema) and stops, then the jobs are written straight into it with SQL (a
# recursive CTE through the sqlite3 shell: finished jobs spread over the last hours, one item
# each, 1 in 50 failed, 10 queued jobs not due for a month, none cancelled). Each phase starts
# visierd on a fresh copy, so a newer build migrates the database at open (open_s is the
# time from start to ready, migration included). Then, on one keep-alive connection each
# (wrk -t1 -c1 --latency, SECONDS each):
#   /status                         counts of jobs per state and the oldest queued job;
#   /jobs?state=cancelled           a filter that matches nothing;
#   /jobs?state=succeeded&limit=50  the first page of a filter that matches almost all.
# Needs wrk, curl and the sqlite3 shell (apt-get install wrk curl sqlite3). Everything
# listens on 127.0.0.1 only. Set STORE_SCALE_SMALL / STORE_SCALE_LARGE for other sizes.
set -eu

candidate=$(cd "${1:-build}" && pwd)
seconds=${2:-5}
baseline=""
[ -n "${3:-}" ] && baseline=$(cd "$3" && pwd)
small=${STORE_SCALE_SMALL:-1000}
large=${STORE_SCALE_LARGE:-1000000}
. "$(dirname "$0")/lib.sh"

make_secrets
build=${baseline:-$candidate}
"$build/visier-sim" --listen 127.0.0.1 --port 0 --port-file "$work/sim.port" --username bench \
        --apikey-file "$work/apikey" --password-file "$work/password" --rate-minute 0 --rate-hour 0 \
        2>"$work/sim.log" &
sim_pid=$!
wait_for "[ -s '$work/sim.port' ]"
sim=http://127.0.0.1:$(cat "$work/sim.port")

# start NAME: like lib.sh's start_visierd, on $work/NAME.db, with a longer bound (a newer
# build migrates a large database before it listens) and visierd's log shown if it does not
# come up. Sets vd_pid, vd_port and vd.
start() {
        cat > "$work/$1.conf" <<CONF
[visier]
base_url = $sim
username = bench
apikey_file = $work/apikey
password_file = $work/password
rate_limit_minute = 1000000
rate_limit_hour = 100000000
[listen]
port = 0
[store]
database = $work/$1.db
[log]
access = no
CONF
        "$build/visierd" --config "$work/$1.conf" 2>"$work/$1.log" &
        vd_pid=$!
        pids="$pids $vd_pid"
        i=0
        until grep -qs 'serving Visier' "$work/$1.log"; do
                i=$((i + 1))
                if [ "$i" -gt 1200 ] || ! kill -0 "$vd_pid" 2>/dev/null; then
                        echo "bench: visierd ($build) did not start:" >&2
                        tail -n 20 "$work/$1.log" >&2
                        exit 1
                fi
                sleep 0.05
        done
        vd_port=$(sed -n 's/.* on http:\/\/127\.0\.0\.1:\([0-9]*\)\/.*/\1/p' "$work/$1.log" | head -n 1)
        vd=http://127.0.0.1:$vd_port
        wait_for "curl -sf $vd/readyz >/dev/null" 600
}

# Every visierd started here is stopped on exit too (lib.sh stops only $vd_pid).
pids=""
trap 'for p in $pids; do kill "$p" 2>/dev/null && wait "$p" 2>/dev/null; done; bench_cleanup' EXIT INT TERM
stop() {
        kill "$1" && wait "$1" || true
}

# The oldest build's schema, empty.
start schema
stop "$vd_pid"
rm -f "$work"/schema.db-* "$work"/schema.db.lock

# fill DATABASE N: N finished jobs with one item each, and 10 queued jobs not yet due.
fill() {
        sqlite3 "$1" <<SQL
PRAGMA synchronous = OFF;
BEGIN;
WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < $2),
        base(t) AS (SELECT CAST(strftime('%s', 'now') AS INTEGER) * 1000 - $2 * 40)
INSERT INTO jobs (state, operation, tenant, project, non_versioned, tenant_code, client, request_body, n_items,
                  attempts, next_run_at, created_at, updated_at, started_at, finished_at, upstream_status,
                  response_status, response_body)
SELECT CASE WHEN i % 50 = 0 THEN 'failed' ELSE 'succeeded' END, 'create', '', '', '', '', 'bench',
       '{"permissions":[{"displayName":"scale-' || i || '"}]}', 1, 1, t + i * 40, t + i * 40, t + i * 40 + 30,
       t + i * 40 + 10, t + i * 40 + 30, 200, 200,
       '{"successes":[{"permissionId":"p' || i || '","displayName":"scale-' || i || '"}],"failures":[]}'
FROM n, base;
WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 10),
        base(t) AS (SELECT CAST(strftime('%s', 'now') AS INTEGER) * 1000)
INSERT INTO jobs (state, operation, tenant, project, non_versioned, tenant_code, client, request_body, n_items,
                  next_run_at, created_at, updated_at)
SELECT 'queued', 'create', '', '', '', '', 'bench', '{"permissions":[{"displayName":"later-' || i || '"}]}', 1,
       t + 30 * 86400000, t - 60000 + i, t - 60000 + i
FROM n, base;
INSERT INTO job_items (job_id, idx, item, correlation_id, state)
SELECT id, 0, '{"displayName":"scale-' || id || '","correlationId":"vd-' || id || '"}', 'vd-' || id,
       CASE state WHEN 'queued' THEN 'pending' ELSE state END
FROM jobs;
COMMIT;
SQL
}

for n in "$small" "$large"; do
        cp "$work/schema.db" "$work/jobs-$n.db"
        t0=$(date +%s.%N)
        fill "$work/jobs-$n.db" "$n"
        echo "made a database of $n jobs in $(awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }') s ($(du -m "$work/jobs-$n.db" | cut -f1) MiB)"
done

# wrk's latency (218.00us, 65.12ms, 1.20s) in microseconds.
to_us() { awk -v v="$1" 'BEGIN { n = v + 0; if (v ~ /us$/) print n; else if (v ~ /ms$/) print n * 1000; else if (v ~ /s$/) print n * 1000000; else print n }'; }

# Both sizes are served at once by two visierds of the same build, and measured in turn,
# ROUNDS times, so that other load on the machine falls on both alike; the figures are the
# medians of the rounds.
rounds=${STORE_SCALE_ROUNDS:-3}
endpoints="/status /jobs?state=cancelled /jobs?state=succeeded&limit=50"
echo "wrk -t1 -c1 -d${seconds}s --latency per endpoint and size, $rounds rounds alternating the sizes, medians; $(nproc) cores, load $(cut -d" " -f1-3 /proc/loadavg)"
printf '%-10s %8s %-32s %8s %12s %10s %10s %8s\n' build jobs endpoint open_s requests/s p50 p99 non-2xx
median() { sort -n | awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)] }'; }
for which in baseline candidate; do
        build=$baseline
        [ "$which" = candidate ] && build=$candidate
        [ -n "$build" ] || continue
        for n in "$small" "$large"; do
                rm -f "$work"/vd-$n.db*
                cp "$work/jobs-$n.db" "$work/vd-$n.db"
                t0=$(date +%s.%N)
                start "vd-$n"
                eval "open_$n=$(awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN { printf "%.2f", b - a }')"
                eval "pid_$n=$vd_pid url_$n=$vd"
                page=$(curl -sf "$vd/jobs?state=succeeded&limit=50" | grep -o '"operation"' | wc -l)
                [ "$page" = 50 ] || echo "bench: $which: /jobs?state=succeeded&limit=50 gave $page jobs" >&2
        done
        for e in $endpoints; do
                : > "$work/rounds"
                for r in $(seq "$rounds"); do
                        for n in "$small" "$large"; do
                                eval "url=\$url_$n"
                                wrk -t1 -c1 -d"${seconds}s" --latency "$url$e" > "$work/wrk.out"
                                echo "$n $(sed -n 's/^Requests\/sec: *\([0-9.]*\).*/\1/p' "$work/wrk.out")" \
                                        "$(to_us "$(awk '$1=="50%"{print $2}' "$work/wrk.out")")" \
                                        "$(to_us "$(awk '$1=="99%"{print $2}' "$work/wrk.out")")" \
                                        "$(sed -n 's/.*Non-2xx or 3xx responses: *\([0-9]*\).*/\1/p' "$work/wrk.out")" >> "$work/rounds"
                        done
                done
                for n in "$small" "$large"; do
                        rps=$(awk -v n="$n" '$1==n{print $2}' "$work/rounds" | median)
                        p50=$(awk -v n="$n" '$1==n{print $3}' "$work/rounds" | median)
                        p99=$(awk -v n="$n" '$1==n{print $4}' "$work/rounds" | median)
                        errors=$(awk -v n="$n" '$1==n{s += $5} END { print s + 0 }' "$work/rounds")
                        eval "open_s=\$open_$n"
                        printf '%-10s %8s %-32s %8s %12s %8sus %8sus %8s\n' "$which" "$n" "$e" "$open_s" "$rps" "$p50" "$p99" "$errors"
                        echo "$which $n $e $p50 $p99" >> "$work/results"
                done
        done
        eval "stop \$pid_$small; stop \$pid_$large"
done
echo "large/small ($large/$small jobs):"
awk -v small="$small" -v large="$large" '
        { key = $1 " " $3; if ($2 == small) { s50[key] = $4; s99[key] = $5 } else { l50[key] = $4; l99[key] = $5 }; order[key] = NR }
        END {
                n = 0
                for (k in order) keys[++n] = k
                for (i = 1; i <= n; i++) for (j = i + 1; j <= n; j++) if (order[keys[j]] < order[keys[i]]) { t = keys[i]; keys[i] = keys[j]; keys[j] = t }
                for (i = 1; i <= n; i++) { k = keys[i]; if (k in s50 && k in l50) printf "  %-44s p50 %8.2fx  p99 %8.2fx\n", k, l50[k] / s50[k], l99[k] / s99[k] }
        }' "$work/results"
echo "load at the end: $(cut -d" " -f1-3 /proc/loadavg)"

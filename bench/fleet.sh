#!/bin/sh
# SPDX-License-Identifier: Apache-2.0
#
# Benchmark (issue 14): fleet mode. Accepted writes and job-status reads a second with one,
# two and three visierd nodes sharing one job store on PostgreSQL, against one node on SQLite,
# in the same run on the same machine; then the failover time of a three-node fleet.
#
#   bench/fleet.sh [BUILD_DIR] [SECONDS] [CLIENTS] [ROUNDS]
#
# ROUNDS 0 runs the failover part only. With FLEET_BENCH_LOGS=DIR the nodes' logs, configs
# and clients' outputs, and PostgreSQL's log, are copied to DIR at the end.
#
# One PostgreSQL server, started here from Debian's package ($PG_BINDIR, else the newest
# /usr/lib/postgresql/N/bin) in the scratch directory, listening on a unix socket only, as
# nobody when run as root, the way tests/pg-harness.c starts it, but with PostgreSQL's default
# durability (fsync, full_page_writes and synchronous_commit on; the tests turn fsync off).
# The SQLite target's database is on the same filesystem.
#
# Throughput, ROUNDS rounds (default 3), each running the four targets in turn, so that other
# load on the machine falls on all of them; each target gets its own fresh database (a new
# SQLite file, or a new PostgreSQL database) and a fresh visier-sim without rate limits, and
# visierd's rate budget is set out of the way:
#   sqlite   one node, [store] database;
#   pg1      one node, [store] url;
#   pg2      two nodes on one PostgreSQL database;
#   pg3      three nodes on one PostgreSQL database.
# For each: CLIENTS clients (default 48, a multiple of 6 spreads evenly) POST single-permission
# creates with Prefer: respond-async for SECONDS (default 5), spread evenly over the target's
# nodes (bench/post-many.c, thread k on node k mod N): accepted/s counts the 202s. The
# script then waits until no job is queued or running (drain_s, from the first write) and
# counts the jobs published a second (published/s, jobs over drain_s; one node publishes, the
# one holding the lane). Then the same clients read GET /jobs/{id} for SECONDS, on the same
# nodes, cycling over every job of the run in random order (reads/s counts the 200s). CPU
# seconds of the visierd nodes and of PostgreSQL (the postmaster and its backends) are taken
# over each phase. The summary gives the median of the rounds for each target and the ratios.
#
# Budget takes, ROUNDS rounds, with the throughput part (bench/budget-take.c, on a database of
# its own, FLEET_BENCH_BUDGET_SECONDS per measurement, default 3): takes a second of the
# fleet's shared rate budget with 1 and 3 connections, granted and refused, against a bare
# SELECT 1 and a one-row UPDATE on the same server (the floor of a round trip, and the first
# design's take).
#
# Failover: a fresh database, visier-sim and three nodes with [fleet] lease_seconds = 6,
# renew_seconds = 2, [visier] request_timeout = 5 and [jobs] publish_settle = 2 (the defaults,
# 15 s, 5 s, 30 s and 60 s, would make a round last up to 91 s). Three times: 2 clients write
# through the two nodes not holding the lane, the holder (the node whose /status says
# held_by_this_node) is killed with SIGKILL once writes reach visier-sim, and failover_s is the
# time from the kill until visier-sim's write_calls counter moves again (probed every 50 ms;
# the dead node's last call is let in first: the counter is read once visier-sim has no write
# in flight). The killed node comes back under a new name before the next round. Each row
# also gives the lease the holder had left at the kill, and the wait its successor's grant
# carried (send_after - acquired_at in fleet_lanes: the dead node's open call plus settle),
# usable_s, from the kill until the successor logged that it publishes under its term, and
# the jobs it found running under the dead node and looked up at Visier before its first write.
#
# Needs a C compiler, pkg-config, libcurl's headers, curl, python3, sqlite3, setpriv and
# PostgreSQL's server. Everything listens on 127.0.0.1 or a unix socket only. Nothing here
# runs in make check.
set -eu

build=$(cd "${1:-build}" && pwd)
seconds=${2:-5}
clients=${3:-48}
rounds=${4:-3}
budget_seconds=${FLEET_BENCH_BUDGET_SECONDS:-3}
bench=$(cd "$(dirname "$0")" && pwd)
. "$(dirname "$0")/lib.sh"

# ---- processes of our own, stopped on exit (then lib.sh's cleanup) ----
node_pids=""
writer_pid=""
pg_pid=""
fleet_cleanup() {
        [ -n "$writer_pid" ] && kill "$writer_pid" 2>/dev/null
        [ -n "$sampler_pid" ] && kill "$sampler_pid" 2>/dev/null
        for p in $node_pids; do kill "$p" 2>/dev/null || true; done
        for p in $node_pids; do wait "$p" 2>/dev/null || true; done
        if [ -n "$pg_pid" ]; then
                kill -INT "$pg_pid" 2>/dev/null && wait "$pg_pid" 2>/dev/null
        fi
        if [ -n "${FLEET_BENCH_LOGS:-}" ] && [ -d "$work" ]; then
                mkdir -p "$FLEET_BENCH_LOGS"
                (cd "$work" && find . -name '*.log' -o -name '*.out' -o -name '*.conf' -o -name '*.waits') |
                        tar -C "$work" -cf - -T - | tar -C "$FLEET_BENCH_LOGS" -xf -
        fi
        bench_cleanup
}
trap fleet_cleanup EXIT INT TERM

cc -O2 -o "$work/post-many" "$bench/post-many.c" $(pkg-config --cflags --libs libcurl) -pthread
make_secrets

# ---- PostgreSQL ----
if [ -n "${PG_BINDIR:-}" ]; then
        pg_bin=$PG_BINDIR
else
        pg_bin=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -t/ -k4,4n | tail -n 1)
fi
[ -x "$pg_bin/initdb" ] && [ -x "$pg_bin/postgres" ] || { echo "bench: no PostgreSQL server (PG_BINDIR)" >&2; exit 1; }
pg=$work/pg
mkdir "$pg"
as_pg=""
if [ "$(id -u)" = 0 ]; then
        # As tests/pg-harness.c: PostgreSQL refuses to run as root. $work (whose secrets stay
        # 0600) must let it through.
        chmod 0711 "$work"
        chown nobody "$pg"
        as_pg="setpriv --reuid=$(id -u nobody) --regid=$(id -g nobody) --clear-groups"
fi
$as_pg env LC_ALL=C "$pg_bin/initdb" -D "$pg/data" -U visier -A trust -E UTF8 --no-locale > "$pg/initdb.log" 2>&1 ||
        { cat "$pg/initdb.log" >&2; exit 1; }
# Durability as PostgreSQL ships it: fsync, full_page_writes and synchronous_commit are on.
# log_lock_waits: a lock waited on for longer than deadlock_timeout (1 s) is logged, counted
# at the end.
$as_pg env LC_ALL=C "$pg_bin/postgres" -D "$pg/data" -k "$pg" -p 5432 -c listen_addresses= \
        -c unix_socket_permissions=0700 -c max_connections=100 -c log_lock_waits=on > "$pg/postgres.log" 2>&1 &
pg_pid=$!
wait_for "'$pg_bin/pg_isready' -q -h '$pg' -p 5432" 400
psql_do() { # DATABASE SQL
        "$pg_bin/psql" -X -q -At -v ON_ERROR_STOP=1 -h "$pg" -p 5432 -U visier -d "$1" -c "$2"
}
pg_settings=$(psql_do postgres "SELECT string_agg(name || '=' || setting, ' ' ORDER BY name) FROM pg_settings
        WHERE name IN ('fsync', 'synchronous_commit', 'full_page_writes', 'shared_buffers', 'wal_level')")
pg_version=$(psql_do postgres "SHOW server_version")
# CPU seconds (user + system) so far of a process, and of the postmaster with its backends.
proc_cpu() { awk -v hz="$(getconf CLK_TCK)" '{ printf "%.2f", ($14 + $15) / hz }' "/proc/$1/stat" 2>/dev/null || echo 0; }
pg_cpu() {
        for p in $pg_pid $(ps -o pid= --ppid "$pg_pid"); do
                proc_cpu "$p"
                echo
        done | awk '{ s += $1 } END { printf "%.2f", s }'
}
nodes_cpu() { for p in $node_pids; do proc_cpu "$p"; echo; done | awk '{ s += $1 } END { printf "%.2f", s }'; }

# ---- visier-sim, one per target ----
sim_start() {
        rm -f "$work/sim.port"
        "$build/visier-sim" --listen 127.0.0.1 --port 0 --port-file "$work/sim.port" --username bench \
                --apikey-file "$work/apikey" --password-file "$work/password" --rate-minute 0 --rate-hour 0 \
                2>>"$work/sim.log" &
        sim_pid=$!
        wait_for "[ -s '$work/sim.port' ]"
        sim=http://127.0.0.1:$(cat "$work/sim.port")
}
sim_stop() {
        kill "$sim_pid" && wait "$sim_pid" || true
        sim_pid=""
}
sim_counter() { curl -sf "$sim/_sim/counters" | json_int "$1"; }

# ---- nodes ----
# node_start DIR NAME STORE_LINE EXTRA: a visierd in DIR (config, log, exports) against the
# sim; appends its pid to node_pids; sets node_pid and node_url once it is ready.
node_start() {
        mkdir -p "$1"
        fleet=""
        case "$3" in url*) fleet="[fleet]
node = $2
${5:-}" ;; esac
        cat > "$1/visierd.conf" <<CONF
[visier]
base_url = $sim
username = bench
apikey_file = $work/apikey
password_file = $work/password
rate_limit_minute = 1000000
rate_limit_hour = 100000000
${4:-}
[listen]
port = 0
[store]
$3
$fleet
[exports]
results = $1/exports
[log]
access = no
CONF
        "$build/visierd" --config "$1/visierd.conf" 2>"$1/visierd.log" &
        node_pid=$!
        node_pids="$node_pids $node_pid"
        node_url=http://127.0.0.1:$(visierd_port "$1/visierd.log")
        wait_for "curl -sf $node_url/readyz >/dev/null" 400
}
# node_stop PID: SIGTERM, and out of node_pids.
node_stop() {
        kill "$1" 2>/dev/null && wait "$1" 2>/dev/null || true
        node_pids=$(echo "$node_pids" | tr ' ' '\n' | grep -vx "$1" | tr '\n' ' ')
}
# The job counts of a node's /status, and whether none is queued or running.
node_drained() {
        j=$(curl -sf "$1/status" | sed -n 's/.*"jobs":{\([^}]*\)}.*/\1/p')
        [ -n "$j" ] && [ "$(echo "$j" | json_int queued)" = 0 ] && [ "$(echo "$j" | json_int running)" = 0 ]
}
# fleet_field URL FIELD: a member of /status's fleet.lane ("" for null).
fleet_field() {
        curl -sf "$1/status" | python3 -c 'import json, sys
v = json.load(sys.stdin).get("fleet", {}).get("lane", {}).get(sys.argv[1])
print("" if v is None else str(v).lower() if isinstance(v, bool) else v)' "$2"
}
field() { sed -n "s/.* $1=\([0-9.]*\).*/\1/p"; } # post-many's KEY=VALUE
rate() { awk -v n="$1" -v t="$2" 'BEGIN { printf "%.1f", (t > 0 ? n / t : 0) }'; }
delta() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", b - a }'; }

# waits_start DATABASE FILE: sample what DATABASE's sessions wait on (pg_stat_activity), every
# 0.25 s, into FILE, one line per busy session: its state, its wait event if any, and for a
# lock wait the start of the statement that waits.
sampler_pid=""
waits_start() {
        (
                while :; do
                        psql_do postgres "SELECT replace(state, ' ', '_') || coalesce(':' || wait_event_type || ':' || wait_event, '')
                                || CASE WHEN wait_event_type = 'Lock' THEN ':' || regexp_replace(left(query, 23), '\s+', '_', 'g') ELSE '' END
                                FROM pg_stat_activity WHERE datname = '$1' AND state IN ('active', 'idle in transaction')" || true
                        sleep 0.25
                done
        ) >> "$2" 2>/dev/null &
        sampler_pid=$!
}
waits_stop() {
        [ -z "$sampler_pid" ] || { kill "$sampler_pid" 2>/dev/null; wait "$sampler_pid" 2>/dev/null || true; }
        sampler_pid=""
}
pg_conninfo() { echo "host=$pg port=5432 user=visier dbname=$1"; }

# ---- throughput: run_target NAME NODES ROUND ----
results=$work/results
: > "$results"
row() { printf '%-7s %5s %5s %8s %11s %8s %11s %8s %11s %9s %9s %6s %9s %8s %8s\n' "$@"; }
run_target() {
        t=$1 n=$2 r=$3
        d=$work/$t-$r
        sim_start
        urls=""
        for k in $(seq 1 "$n"); do
                if [ "$t" = sqlite ]; then
                        store="database = $d/visierd.db"
                else
                        [ "$k" = 1 ] && psql_do postgres "CREATE DATABASE fb_${t}_$r"
                        store="url = $(pg_conninfo "fb_${t}_$r")"
                fi
                node_start "$d/n$k" "$t-r$r-n$k" "$store"
                urls="$urls${urls:+,}$node_url"
        done
        first=${urls%%,*}
        # Fleet nodes: the lane is held before the clock starts (the first tick, at start).
        [ "$t" = sqlite ] || wait_for "[ -n \"\$(fleet_field $first holder)\" ]" 400
        wurls=$(echo "$urls" | sed 's|,|/v1/admin/permissions,|g')/v1/admin/permissions

        [ "$t" = sqlite ] || waits_start "fb_${t}_$r" "$d/writes.waits"
        cpu_n0=$(nodes_cpu) cpu_p0=$(pg_cpu) t0=$(now)
        "$work/post-many" -p "$t-r$r" -H "Prefer: respond-async" -d "$seconds" "$wurls" 0 "$clients" > "$d/writes.out"
        cpu_n1=$(nodes_cpu) cpu_p1=$(pg_cpu)
        waits_stop
        wait_for "node_drained $first" 6000 # up to 5 minutes
        t1=$(now)
        grep -q ' errors=0 ' "$d/writes.out" || echo "bench: $t round $r writes: $(cat "$d/writes.out")" >&2
        ok=$(field s202 < "$d/writes.out")
        ok=${ok:-0}
        w_el=$(sed -n 's/^elapsed=\([0-9.]*\).*/\1/p' "$d/writes.out")
        drain=$(delta "$t0" "$t1")
        calls=$(sim_counter write_calls)
        overlaps=$(sim_counter publish_overlaps)

        if [ "$t" = sqlite ]; then
                sqlite3 "$d/visierd.db" "SELECT id FROM jobs" | shuf > "$d/ids"
        else
                psql_do "fb_${t}_$r" "SELECT id FROM jobs" | shuf > "$d/ids"
        fi
        cpu_n2=$(nodes_cpu) cpu_p2=$(pg_cpu)
        "$work/post-many" -g "$d/ids" -d "$seconds" "$urls" 0 "$clients" > "$d/reads.out"
        cpu_n3=$(nodes_cpu) cpu_p3=$(pg_cpu)
        grep -q ' errors=0 ' "$d/reads.out" && ! grep -q ' s[1345][0-9][0-9]=' "$d/reads.out" ||
                echo "bench: $t round $r reads: $(cat "$d/reads.out")" >&2
        rd=$(field s200 < "$d/reads.out")
        rd=${rd:-0}
        r_el=$(sed -n 's/^elapsed=\([0-9.]*\).*/\1/p' "$d/reads.out")

        row "$t" "$r" "$n" "$ok" "$(rate "$ok" "$w_el")" "$(field p99_ms < "$d/writes.out")" \
                "$(rate "$(wc -l < "$d/ids")" "$drain")" "$drain" "$(rate "$rd" "$r_el")" \
                "$(field p99_ms < "$d/reads.out")" "$calls" "$overlaps" \
                "$(delta "$cpu_n0" "$cpu_n1")/$(delta "$cpu_n2" "$cpu_n3")" \
                "$(delta "$cpu_p0" "$cpu_p1")" "$(delta "$cpu_p2" "$cpu_p3")"
        echo "$t $r $(rate "$ok" "$w_el") $(rate "$rd" "$r_el") $(rate "$(wc -l < "$d/ids")" "$drain")" >> "$results"
        for p in $node_pids; do node_stop "$p"; done
        sim_stop
}

echo "fleet benchmark: $clients clients, ${seconds}s of writes then ${seconds}s of reads per target, $rounds rounds;" \
        "$(nproc) cores, load $(cut -d" " -f1-3 /proc/loadavg)"
echo "PostgreSQL $pg_version on a unix socket, $pg_settings; SQLite and PostgreSQL on $(df -T "$work" | awk 'NR==2 { print $2 }') under $work"
row target round nodes accepted accepted/s w_p99ms published/s drain_s reads/s r_p99ms calls overlaps node_cpu_s pg_cpu_w pg_cpu_r
for r in $(seq 1 "$rounds"); do
        run_target sqlite 1 "$r"
        run_target pg1 1 "$r"
        run_target pg2 2 "$r"
        run_target pg3 3 "$r"
done

throughput_summary() {
median() { # TARGET COLUMN (of $results)
        awk -v t="$1" -v c="$2" '$1 == t { print $c }' "$results" | sort -g |
                awk '{ a[NR] = $1 } END { printf "%.1f", NR % 2 ? a[(NR + 1) / 2] : (a[NR / 2] + a[NR / 2 + 1]) / 2 }'
}
echo
echo "medians of $rounds rounds:"
printf '%-7s %5s %11s %11s %11s\n' target nodes accepted/s reads/s published/s
for t in sqlite pg1 pg2 pg3; do
        case $t in sqlite | pg1) n=1 ;; pg2) n=2 ;; pg3) n=3 ;; esac
        printf '%-7s %5s %11s %11s %11s\n' "$t" "$n" "$(median $t 3)" "$(median $t 4)" "$(median $t 5)"
        eval "w_$t=$(median $t 3) r_$t=$(median $t 4) p_$t=$(median $t 5)"
done
awk -v ws="$w_sqlite" -v w1="$w_pg1" -v w2="$w_pg2" -v w3="$w_pg3" -v rs="$r_sqlite" -v r1="$r_pg1" -v r2="$r_pg2" \
        -v r3="$r_pg3" -v ps="$p_sqlite" -v p1="$p_pg1" -v p2="$p_pg2" -v p3="$p_pg3" 'BEGIN {
        printf "ratios         accepted/s  reads/s  published/s\n"
        printf "pg1/sqlite     %10.2f %8.2f %12.2f\n", w1 / ws, r1 / rs, p1 / ps
        printf "pg2/pg1        %10.2f %8.2f %12.2f\n", w2 / w1, r2 / r1, p2 / p1
        printf "pg3/pg1        %10.2f %8.2f %12.2f\n", w3 / w1, r3 / r1, p3 / p1
        printf "pg3/sqlite     %10.2f %8.2f %12.2f\n", w3 / ws, r3 / rs, p3 / ps
}'
echo "what the busy PostgreSQL sessions of the target's database were doing during the writes (pg_stat_activity" \
        "every 0.25 s, sessions active or idle in transaction; share of the session samples of all rounds):"
for t in pg1 pg2 pg3; do
        cat "$work"/$t-*/writes.waits 2>/dev/null | sort | uniq -c | sort -rn |
                awk -v t="$t" '{ n[NR] = $1; w[NR] = $2; s += $1 } END {
                        printf "  %s (%d session samples):\n", t, s
                        for (i = 1; i <= NR && i <= 6; i++) printf "    %3.0f%% %s\n", 100 * n[i] / s, w[i] }'
done
echo "load after the throughput part: $(cut -d" " -f1-3 /proc/loadavg)"
}
[ "$rounds" -gt 0 ] && throughput_summary

# ---- the shared rate budget's take against two baselines (bench/budget-take.c) ----
if [ "$rounds" -gt 0 ]; then
        cc -O2 -o "$work/budget-take" -I"$bench/../src/visierd" -I"$bench/../src/shared" -I"$build" \
                "$bench/budget-take.c" "$build/libvisierd-core.a" \
                $(pkg-config --cflags --libs jansson sqlite3 libsystemd libcurl libmicrohttpd libpq) -linih -lm -pthread
        psql_do postgres "CREATE DATABASE fb_budget"
        echo
        echo "budget takes: ${budget_seconds}s per measurement, $rounds rounds; load $(cut -d" " -f1-3 /proc/loadavg)"
        "$work/budget-take" "$(pg_conninfo fb_budget)" "$budget_seconds" "$rounds"
        echo "load after the budget part: $(cut -d" " -f1-3 /proc/loadavg)"
fi

# ---- failover ----
lease=6 renew=2 timeout=5 settle=2
fleet_extra="lease_seconds = $lease
renew_seconds = $renew"
visier_extra="request_timeout = $timeout"
jobs_extra="[jobs]
publish_settle = $settle"
echo
echo "failover: 3 nodes, lease_seconds=$lease renew_seconds=$renew request_timeout=$timeout (call deadline $((timeout + 1)) s)" \
        "publish_settle=$settle; 2 writers on the two other nodes; load $(cut -d" " -f1-3 /proc/loadavg)"
sim_start
psql_do postgres "CREATE DATABASE fb_failover"
store="url = $(pg_conninfo fb_failover)"
f=$work/failover
for k in 1 2 3; do
        node_start "$f/n$k" "fo-n$k" "$store" "$visier_extra
$jobs_extra" "$fleet_extra"
        eval "fo_pid_$k=$node_pid fo_url_$k=$node_url fo_name_$k=fo-n$k"
done
printf '%-6s %-10s %-10s %5s %13s %13s %9s %11s %11s %9s\n' round killed next term lease_left_s grant_wait_s usable_s reconciled \
        failover_s overlaps
failovers=""
# Jobs a new holder found running under a dead one and looked up at Visier before writing.
reconciled() { cat "$f"/*/visierd.log | grep -c 'was running when visierd stopped; reconciling' || true; }
for rep in 1 2 3; do
        # The holder, by its own word.
        holder=""
        wait_for 'for k in 1 2 3; do eval u=\$fo_url_$k; [ "$(fleet_field $u held_by_this_node)" = true ] && holder=$k; done; [ -n "$holder" ]' 400
        others=""
        for k in 1 2 3; do [ "$k" = "$holder" ] || { eval u=\$fo_url_$k; others="$others${others:+,}$u/v1/admin/permissions"; }; done
        eval hurl=\$fo_url_$holder hpid=\$fo_pid_$holder hname=\$fo_name_$holder
        "$work/post-many" -p "fo-$rep" -H "Prefer: respond-async" -d 180 "$others" 0 2 > "$f/writers-$rep.out" &
        writer_pid=$!
        c0=$(sim_counter write_calls)
        wait_for "[ \"\$(sim_counter write_calls)\" -gt $((c0 + 2)) ]" 400
        left=$(fleet_field "$hurl" expires_in_seconds)
        kill -KILL "$hpid"
        t_kill=$(now)
        wait "$hpid" 2>/dev/null || true
        node_pids=$(echo "$node_pids" | tr ' ' '\n' | grep -vx "$hpid" | tr '\n' ' ')
        # Let the dead node's last call in, then wait for the next write call.
        wait_for "[ \"\$(sim_counter writes_in_flight)\" = 0 ]" 400
        c1=$(sim_counter write_calls)
        rec0=$(reconciled)
        wait_for "[ \"\$(sim_counter write_calls)\" -gt $c1 ]" 2400 # 2 minutes
        t_first=$(now)
        rec=$(($(reconciled) - rec0))
        fo=$(delta "$t_kill" "$t_first")
        failovers="$failovers $fo"
        lane=$(psql_do fb_failover "SELECT holder, term, round(extract(epoch FROM send_after - acquired_at)::numeric, 2)
                FROM fleet_lanes")
        kill "$writer_pid" 2>/dev/null && wait "$writer_pid" 2>/dev/null || true
        writer_pid=""
        term=$(echo "$lane" | cut -d'|' -f2)
        # When the successor's publisher began under its term (the log's UTC time stamp).
        usable=$(cat "$f"/*/visierd.log | grep -m 1 "publishing under term $term of" | cut -d' ' -f1)
        usable=$(delta "$t_kill" "$(date -d "$usable" +%s.%N)")
        printf '%-6s %-10s %-10s %5s %13.2f %13s %9s %11s %11s %9s\n' "$rep" "$hname" "$(echo "$lane" | cut -d'|' -f1)" \
                "$term" "$left" "$(echo "$lane" | cut -d'|' -f3)" "$usable" "$rec" "$fo" "$(sim_counter publish_overlaps)"
        # The killed node comes back under a new name (a node name is one process's).
        node_start "$f/n$holder-$rep" "fo-n$holder-r$rep" "$store" "$visier_extra
$jobs_extra" "$fleet_extra"
        eval "fo_pid_$holder=$node_pid fo_url_$holder=$node_url fo_name_$holder=fo-n$holder-r$rep"
done
echo "$failovers" | tr ' ' '\n' | sed '/^$/d' | sort -g |
        awk '{ a[NR] = $1 } END { printf "failover_s median of %d: %.2f\n", NR, a[(NR + 1) / 2] }'
wait_for "node_drained $fo_url_1" 3600 # 3 minutes
echo "failover jobs at the end: $(curl -sf "$fo_url_1/status" | sed -n 's/.*"jobs":{\([^}]*\)}.*/\1/p');" \
        "visier-sim write_calls=$(sim_counter write_calls) publish_overlaps=$(sim_counter publish_overlaps)" \
        "rate_limited=$(sim_counter rate_limited)"
for p in $node_pids; do node_stop "$p"; done
sim_stop

# What the nodes logged at warning or worse (every node of the run, throughput and failover).
bad=$(cat "$work"/*/visierd.log "$work"/*/*/visierd.log 2>/dev/null | grep -Ei '<[0-4]>|warn|error|crit|fail' | grep -v 'failed=0' || true)
if [ -n "$bad" ]; then
        echo "node log lines at warning or worse, by message ($(echo "$bad" | wc -l) lines):"
        echo "$bad" | sed 's/^[^ ]* visierd\[[0-9]*\] //; s/[0-9][0-9]*/N/g' | sort | uniq -c | sort -rn | head -n 20
fi
# PostgreSQL's log: lock waits past 1 s by the statement that waited, the longest wait that
# ended, and the statements cancelled by visierd's statement timeout (2 s).
waits=$(awk '/still waiting for/ { w = 1; next }
        w && /STATEMENT:/ { sub(/.*STATEMENT: */, ""); print substr($0, 1, 40); w = 0 }' "$pg/postgres.log" | sort | uniq -c | sort -rn)
if [ -n "$waits" ]; then
        echo "PostgreSQL lock waits longer than 1 s (log_lock_waits), by statement; the longest that ended:" \
                "$(sed -n 's/.* acquired .* after \([0-9.]*\) ms.*/\1/p' "$pg/postgres.log" | sort -g | tail -n 1) ms;" \
                "statements cancelled by the statement timeout: $(grep -c 'canceling statement due to statement timeout' "$pg/postgres.log")"
        echo "$waits"
fi
echo "load at the end: $(cut -d" " -f1-3 /proc/loadavg)"

# SPDX-License-Identifier: Apache-2.0
# Shared by the benchmark scripts (sourced, not run): a scratch directory removed on exit
# together with the visier-sim and visierd they started, bounded readiness probes, and
# throwaway credentials. Set sim_pid and vd_pid to the processes to stop.

work=$(mktemp -d)
sim_pid=""
vd_pid=""
bench_cleanup() {
        [ -s "$work/nginx.pid" ] && kill "$(cat "$work/nginx.pid")" 2>/dev/null
        [ -n "$vd_pid" ] && kill "$vd_pid" 2>/dev/null && wait "$vd_pid" 2>/dev/null
        [ -n "$sim_pid" ] && kill "$sim_pid" 2>/dev/null && wait "$sim_pid" 2>/dev/null
        rm -rf "$work"
}
trap bench_cleanup EXIT INT TERM

# Probe until a condition holds (bounded: $2 probes of 50 ms, default 200), instead of
# guessing with sleep.
wait_for() {
        i=0
        until eval "$1"; do
                i=$((i + 1))
                [ "$i" -gt "${2:-200}" ] && { echo "bench: timed out waiting for: $1" >&2; exit 1; }
                sleep 0.05
        done
}

# Random API key and password files in $work, mode 0600.
make_secrets() {
        head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n' > "$work/apikey"
        head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n' > "$work/password"
        chmod 600 "$work/apikey" "$work/password"
}

# The port visierd (started with port = 0, stderr in $1) listens on, once it logged it.
visierd_port() {
        wait_for "grep -qs 'serving Visier' '$1'"
        sed -n 's/.* on http:\/\/127\.0\.0\.1:\([0-9]*\)\/.*/\1/p' "$1" | head -n 1
}

# start_visierd SIM_URL [EXTRA_VISIER_LINES]: visierd on a free loopback port against the
# sim, rate budget out of the way, database in $work; sets vd_pid, vd_port and vd, and
# returns once it is ready (has a token).
start_visierd() {
        cat > "$work/visierd.conf" <<CONF
[visier]
base_url = $1
username = bench
apikey_file = $work/apikey
password_file = $work/password
rate_limit_minute = 1000000
rate_limit_hour = 100000000
${2:-}
[listen]
port = 0
[store]
database = $work/visierd.db
[log]
# As nginx runs here, with access logs off.
access = no
CONF
        "$build/visierd" --config "$work/visierd.conf" 2>"$work/visierd.log" &
        vd_pid=$!
        vd_port=$(visierd_port "$work/visierd.log")
        vd=http://127.0.0.1:$vd_port
        wait_for "curl -sf $vd/readyz >/dev/null"
}

# start_sim: throwaway secrets and visier-sim on a free loopback port with no rate limit of
# its own; sets sim_pid and sim_port.
start_sim() {
        make_secrets
        "$build/visier-sim" --listen 127.0.0.1 --port 0 --port-file "$work/sim.port" --username bench \
                --apikey-file "$work/apikey" --password-file "$work/password" --rate-minute 0 --rate-hour 0 \
                2>"$work/sim.log" &
        sim_pid=$!
        wait_for "[ -s '$work/sim.port' ]"
        sim_port=$(cat "$work/sim.port")
}

# A free loopback TCP port.
free_port() {
        python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

# start_nginx HTTP_BLOCK: nginx (never as a service) with worker_processes 2, access logs off
# and long keep-alive, serving what HTTP_BLOCK (server and upstream blocks) says; stopped on
# exit. Its workers run as an unprivileged user: they may pass through $work (whose secret
# files stay 0600).
start_nginx() {
        chmod 0711 "$work"
        cat > "$work/nginx.conf" <<CONF
worker_processes 2;
pid $work/nginx.pid;
error_log $work/nginx.err;
events { worker_connections 8192; }
http {
    access_log off;
    default_type application/json;
    keepalive_requests 1000000;
$1
}
CONF
        nginx -c "$work/nginx.conf" -p "$work"
}

# Wall-clock seconds with nanoseconds.
now() { date +%s.%N; }
# json_int FIELD: the integer value of "FIELD" in the JSON on stdin (flat, compact keys).
json_int() { sed -n "s/.*\"$1\":\([0-9]*\).*/\1/p"; }
# The job counts of visierd's /status ($vd), and whether none is queued or running.
vd_jobs() { curl -sf "$vd/status" | sed -n 's/.*"jobs":{\([^}]*\)}.*/\1/p'; }
drained() {
        jobs=$(vd_jobs)
        [ -n "$jobs" ] && [ "$(echo "$jobs" | json_int queued)" = 0 ] && [ "$(echo "$jobs" | json_int running)" = 0 ]
}

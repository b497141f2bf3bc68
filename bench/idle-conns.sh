#!/bin/sh
# SPDX-License-Identifier: Apache-2.0
#
# Benchmark: COUNT idle keep-alive connections (each has made one request and stays open):
# visierd's RSS and threads before and with them open, in the same run.
#
#   bench/idle-conns.sh [BUILD_DIR] [COUNT]
#
# Needs python3 and curl. Loopback only.
set -eu

build=$(cd "${1:-build}" && pwd)
count=${2:-10000}
. "$(dirname "$0")/lib.sh"

[ "$(ulimit -Hn)" = unlimited ] || [ "$(ulimit -Hn)" -ge $((count + 1024)) ] || { echo "bench: the hard limit on open files is below $((count + 1024))" >&2; exit 1; }
ulimit -n $((count + 1024))
start_sim
start_visierd "http://127.0.0.1:$sim_port"

field() { sed -n "s/^$1:[[:space:]]*\([0-9]*\).*/\1/p" "/proc/$vd_pid/status"; }
threads_before=$(field Threads)
rss_before=$(field VmRSS)
python3 - "$vd_port" "$count" "$work/held" <<'PY' &
import socket, sys, time
port, count, flag = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
req = b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
socks, ok = [], 0
for i in range(count):
    s = socket.create_connection(("127.0.0.1", port))
    s.sendall(req)
    if s.recv(4096).startswith(b"HTTP/1.1 200"):
        ok += 1
    socks.append(s)
open(flag, "w").write(str(ok))
time.sleep(30)
PY
py_pid=$!
wait_for "[ -s '$work/held' ]" 2400
threads_during=$(field Threads)
rss_during=$(field VmRSS)
hwm=$(field VmHWM)
echo "$count keep-alive connections, each after one GET /healthz ($(cat "$work/held") answered 200)"
printf '%-18s %10s %12s\n' "phase" "threads" "RSS (KiB)"
printf '%-18s %10s %12s\n' "no connections" "$threads_before" "$rss_before"
printf '%-18s %10s %12s\n' "$count open" "$threads_during" "$rss_during"
echo "peak RSS (VmHWM): $hwm KiB"
kill "$py_pid" 2>/dev/null || true

#!/bin/sh
# SPDX-License-Identifier: Apache-2.0
#
# Benchmark: a large CSV export (a detailed list query) through visierd versus straight from
# visier-sim, in the same run on the same machine: bytes, seconds, throughput, their ratio,
# and visierd's memory growth while it streams (peak RSS during the export minus RSS before).
#
#   bench/export-stream.sh [BUILD_DIR] [ROWS]
#
# ROWS defaults to 16,500,000 (a little over 1 GB of CSV with the query below). Needs curl.
# Everything listens on 127.0.0.1 only.
set -eu

build=$(cd "${1:-build}" && pwd)
rows=${2:-16500000}
. "$(dirname "$0")/lib.sh"


make_secrets

"$build/visier-sim" --listen 127.0.0.1 --port 0 --port-file "$work/sim.port" --username bench \
        --apikey-file "$work/apikey" --password-file "$work/password" --rate-minute 0 --rate-hour 0 \
        --query-rows "$rows" 2>"$work/sim.log" &
sim_pid=$!
wait_for "[ -s '$work/sim.port' ]"
sim_port=$(cat "$work/sim.port")

start_visierd "http://127.0.0.1:$sim_port"

token=$(curl -s -H "apikey: $(cat "$work/apikey")" \
        --data-urlencode "username=bench" --data-urlencode "password=$(cat "$work/password")" \
        "http://127.0.0.1:$sim_port/v1/admin/visierSecureToken")
body='{"source":{"analyticObject":"Employee"},"columns":[
 {"columnDefinition":{"property":{"name":"EmployeeID","qualifyingPath":"Employee"}}},
 {"columnDefinition":{"property":{"name":"Full_Name","qualifyingPath":"Employee"}}},
 {"columnDefinition":{"property":{"name":"Pay_Level","qualifyingPath":"Employee"}}},
 {"columnDefinition":{"dimension":{"name":"Location","qualifyingPath":"Employee"}}},
 {"columnDefinition":{"dimension":{"name":"Gender","qualifyingPath":"Employee"}}}],
 "timeInterval":{"fromDateTime":"2025-01-01"}}'

rss_kb() { sed -n 's/^VmRSS:[[:space:]]*\([0-9]*\).*/\1/p' "/proc/$vd_pid/status"; }
hwm_kb() { sed -n 's/^VmHWM:[[:space:]]*\([0-9]*\).*/\1/p' "/proc/$vd_pid/status"; }

run() { # NAME URL [curl args...]
        name=$1
        url=$2
        shift 2
        curl -s -o /dev/null -w '%{http_code} %{size_download} %{time_total}\n' -H "Accept: text/csv" \
                -H "Content-Type: application/json" -d "$body" "$@" "$url" > "$work/$name.out"
        read -r code bytes secs < "$work/$name.out"
        [ "$code" = 200 ] || { echo "bench: $name answered $code" >&2; exit 1; }
        mbps=$(awk -v b="$bytes" -v s="$secs" 'BEGIN { printf "%.1f", b / s / 1048576 }')
        printf '%-8s %14s %10s %10s\n' "$name" "$bytes" "$secs" "$mbps"
        eval "bytes_$name=$bytes; mbps_$name=$mbps"
}

echo "CSV export, $rows rows of 5 columns, $(nproc) cores"
printf '%-8s %14s %10s %10s\n' target bytes seconds MiB/s
run direct "http://127.0.0.1:$sim_port/v1/data/query/list" \
        -H "apikey: $(cat "$work/apikey")" -H "Cookie: VisierASIDToken=$token"
rss_before=$(rss_kb)
# visierd's peak RSS since start is VmHWM; sample VmRSS meanwhile to see the curve too.
( while kill -0 "$vd_pid" 2>/dev/null; do rss_kb >> "$work/rss.samples"; sleep 0.2; done ) &
sampler=$!
run visierd "http://127.0.0.1:$vd_port/v1/data/query/list"
kill "$sampler" 2>/dev/null || true
rss_peak=$(hwm_kb)
[ "$bytes_direct" = "$bytes_visierd" ] || echo "bench: the byte counts differ!" >&2
max_sample=$(sort -n "$work/rss.samples" | tail -n 1)
awk -v a="$mbps_visierd" -v b="$mbps_direct" 'BEGIN { printf "throughput visierd/direct: %.2f\n", a / b }'
echo "visierd RSS before: ${rss_before} KiB; peak (VmHWM) after: ${rss_peak} KiB; largest sample while streaming: ${max_sample} KiB"
awk -v p="$rss_peak" -v b="$rss_before" 'BEGIN { printf "visierd peak memory growth: %.1f MiB\n", (p - b) / 1024 }'

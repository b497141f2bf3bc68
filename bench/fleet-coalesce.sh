#!/bin/sh
# SPDX-License-Identifier: Apache-2.0
#
# Benchmark (issue 14): does a fleet coalesce as well as one node? The acceptance workload of
# tests/test-fleet (10,000 mixed permission changes from 50 clients, visier-sim enforcing 100
# calls a minute) run ROUNDS times against three nodes and against one node on the same
# PostgreSQL store, interleaved (one node, three nodes, one node, ...) so that other load on
# the machine falls on both, each pair with its own seed.
#
#   bench/fleet-coalesce.sh [BUILD_DIR] [ROUNDS] [JOBS]
#
# BUILD_DIR is a configured and built tree (default build); ROUNDS defaults to 3, JOBS to
# 10000. Each run is `CK_RUN_CASE=workload tests/test-fleet` with FLEET_JOBS, FLEET_SEED and
# FLEET_WORKLOAD_NODES set, about 90 s at 10,000 jobs; its "fleet: nodes N, jobs ..." line is
# kept. The summary gives, for each run, the jobs a write call, the write calls, the creates
# among the jobs (the clients' choice of operation depends on which of their creates they
# have seen succeed, so the mix differs between runs of one seed) and the elapsed time; then
# the median jobs a call of each side and their ratio (three nodes over one). Every run must
# also pass the test's own checks (0 overlaps, 0 rate limited, 0 lost, 0 duplicates): a run
# that fails stops the script.
#
# Needs PostgreSQL's server (as tests/test-fleet does) and python3. Nothing here runs in make
# check.
set -eu

build=$(cd "${1:-build}" && pwd)
rounds=${2:-3}
jobs=${3:-10000}
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT INT TERM

[ -x "$build/tests/test-fleet" ] || { echo "bench: no $build/tests/test-fleet (make check TESTS= builds it)" >&2; exit 1; }

run() { # NODES SEED
        log=$out/run-$1-$2.log
        if ! (cd "$build" && CK_RUN_CASE=workload FLEET_JOBS=$jobs FLEET_SEED=$2 FLEET_WORKLOAD_NODES=$1 \
                tests/test-fleet) > "$log" 2>&1; then
                cat "$log" >&2
                echo "bench: the run with $1 node(s), seed $2, failed" >&2
                exit 1
        fi
        grep '^fleet: nodes ' "$log" >> "$out/lines"
        grep '^fleet: nodes ' "$log"
}

seed0=$(od -An -N4 -tu4 /dev/urandom | tr -d ' ')
for r in $(seq 1 "$rounds"); do
        seed=$((seed0 + r))
        run 1 "$seed"
        run 3 "$seed"
done

python3 - "$out/lines" <<'EOF'
import re, statistics, sys

rows = {1: [], 3: []}
for line in open(sys.argv[1]):
    m = re.search(r"nodes (\d+), jobs (\d+) \(create (\d+),.*write calls (\d+) \(([\d.]+) jobs a call\).*"
                  r"elapsed ([\d.]+) s, seed (\d+)", line)
    n, jobs, creates, calls, per_call, elapsed, seed = m.groups()
    rows[int(n)].append((float(per_call), int(calls), int(creates), float(elapsed), seed))
print("nodes  seed        jobs/call  calls  creates  elapsed_s")
for n in (1, 3):
    for per_call, calls, creates, elapsed, seed in rows[n]:
        print(f"{n:<6} {seed:<11} {per_call:9.1f}  {calls:5d}  {creates:7d}  {elapsed:9.1f}")
m1 = statistics.median(r[0] for r in rows[1])
m3 = statistics.median(r[0] for r in rows[3])
print(f"median jobs a call: one node {m1:.1f}, three nodes {m3:.1f}, ratio {m3 / m1:.3f}")
EOF

#!/bin/sh
# SPDX-License-Identifier: Apache-2.0
# Run an integration suite with its job store on PostgreSQL (tests/harness.h): TESTS lists
# tests/NAME.pg for each suite that runs against both backends; this runs tests/NAME with
# VISIERD_TEST_STORE=postgresql. The suite exits 77 (SKIP) where PostgreSQL cannot run.
set -eu
test $# -eq 1 || { echo "usage: $0 tests/NAME.pg" >&2; exit 2; }
name=$(basename "$1" .pg)
# tools/quickstart sets this for distcheck, after the sanitizer runs.
if [ -n "${VISIERD_SKIP_PG_SUITES:-}" ]; then
        echo "SKIP: tests/$name on PostgreSQL: VISIERD_SKIP_PG_SUITES is set ($VISIERD_SKIP_PG_SUITES)"
        exit 77
fi
VISIERD_TEST_STORE=postgresql
export VISIERD_TEST_STORE
exec "./tests/$name"

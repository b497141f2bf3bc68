#!/bin/sh
# SPDX-License-Identifier: Apache-2.0
# The checked-in policy table src/visierd/policy-table.h is what tools/gen-policy.py makes from
# Visier's definitions today (../shared/visier-api beside the source tree, or VISIER_API_DIR):
# every operation of the published API, each once, with its class and headers. The check must
# be able to fail: a table with one row missing is refused. Skips when the definitions or
# python3 are not there (as in a tarball's distcheck).
set -u
top=${TOP_SRCDIR:-$(dirname "$0")/..}
api=${VISIER_API_DIR:-$top/../shared/visier-api}
gen="$top/tools/gen-policy.py"
table="$top/src/visierd/policy-table.h"
if ! command -v python3 >/dev/null 2>&1; then
        echo "python3 not installed: skipping"
        exit 77
fi
set -- "$api/administration-apis.yaml" "$api/analytic-model-apis.yaml" "$api/authentication-apis.yaml" \
        "$api/data-out-apis.yaml"
for f in "$@"; do
        if [ ! -f "$f" ]; then
                echo "Visier's definitions not found in $api: skipping"
                exit 77
        fi
done
if ! python3 "$gen" --check "$table" "$@"; then
        echo "regenerate: tools/gen-policy.py $* > src/visierd/policy-table.h"
        exit 1
fi
# Every operationId of the definitions has its row.
ids=$(cat "$@" | sed -n 's/^ *operationId: *\([A-Za-z0-9_]*\).*/\1/p' | sort -u | wc -l)
rows=$(grep -c '^        { "' "$table")
if [ "$ids" -ne "$rows" ]; then
        echo "the definitions have $ids operations, the table $rows rows"
        exit 1
fi
tmp=$(mktemp) || exit 1
trap 'rm -f "$tmp"' EXIT
sed '/Permissions_GetCapabilities \*\//d' "$table" > "$tmp"
if cmp -s "$tmp" "$table"; then
        echo "the table has no Permissions_GetCapabilities row any more: update this test"
        exit 1
fi
if python3 "$gen" --check "$tmp" "$@" 2>/dev/null; then
        echo "a table with a row missing passed the check"
        exit 1
fi
echo "policy-table.h matches Visier's definitions: $rows operations"
exit 0

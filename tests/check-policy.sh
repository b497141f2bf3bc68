#!/bin/sh
# SPDX-License-Identifier: Apache-2.0
# The checked-in policy table src/visierd/policy-table.h is what tools/gen-policy.py makes from
# Visier's definitions today (../shared/visier-api beside the source tree, or VISIER_API_DIR):
# every operation of the published API, each once, with its class and headers; and the block
# of docs/openapi.yaml generated from it is current. The checks must be able to fail: a table
# with one row missing, and an openapi.yaml with one generated operation missing, are refused. Skips when the definitions or
# python3 are not there (as in a tarball's distcheck).
set -u
top=${TOP_SRCDIR:-$(dirname "$0")/..}
api=${VISIER_API_DIR:-$top/../shared/visier-api}
gen="$top/tools/gen-policy.py"
table="$top/src/visierd/policy-table.h"
openapi="$top/docs/openapi.yaml"
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
if ! python3 "$gen" --check-openapi "$openapi" "$@"; then
        echo "regenerate: tools/gen-policy.py --openapi docs/openapi.yaml $*"
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
# docs/openapi.yaml with one line of a generated operation gone.
sed '/^      operationId: UserGroupsV2_GetUserGroups$/d' "$openapi" > "$tmp"
if cmp -s "$tmp" "$openapi"; then
        echo "docs/openapi.yaml has no UserGroupsV2_GetUserGroups operation any more: update this test"
        exit 1
fi
if python3 "$gen" --check-openapi "$tmp" "$@" 2>/dev/null; then
        echo "an openapi.yaml with a generated line missing passed the check"
        exit 1
fi
sed '/Permissions_GetCapabilities \*\//d' "$table" > "$tmp"
if cmp -s "$tmp" "$table"; then
        echo "the table has no Permissions_GetCapabilities row any more: update this test"
        exit 1
fi
if python3 "$gen" --check "$tmp" "$@" 2>/dev/null; then
        echo "a table with a row missing passed the check"
        exit 1
fi
echo "policy-table.h and docs/openapi.yaml match Visier's definitions: $rows operations"
exit 0

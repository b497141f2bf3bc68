#!/bin/sh
# SPDX-License-Identifier: Apache-2.0
# The checked-in table src/visierd/validate-schema.h is what tools/gen-validate-schema.py
# makes from Visier's definitions today (../shared/visier-api beside the source tree, or
# VISIER_API_DIR), and the comparison fails on a table that differs by one enum value.
# Skips when the definitions or python3 are not there (as in a tarball's distcheck).
set -u
top=${TOP_SRCDIR:-$(dirname "$0")/..}
api=${VISIER_API_DIR:-$top/../shared/visier-api}
gen="$top/tools/gen-validate-schema.py"
table="$top/src/visierd/validate-schema.h"
if ! command -v python3 >/dev/null 2>&1; then
        echo "python3 not installed: skipping"
        exit 77
fi
if [ ! -f "$api/administration-apis.yaml" ] || [ ! -f "$api/visier-subset.yaml" ]; then
        echo "Visier's definitions not found in $api: skipping"
        exit 77
fi
set -- "$api/administration-apis.yaml" "$api/visier-subset.yaml"
if ! python3 "$gen" --check "$table" "$@"; then
        echo "regenerate: tools/gen-validate-schema.py $* > src/visierd/validate-schema.h"
        exit 1
fi
# The check must be able to fail: a copy with one enum value changed is refused.
tmp=$(mktemp) || exit 1
trap 'rm -f "$tmp"' EXIT
sed 's/"NotFound"/"NotThere"/' "$table" > "$tmp"
if cmp -s "$tmp" "$table"; then
        echo "the table holds no NotFound enum value any more: update this test"
        exit 1
fi
if python3 "$gen" --check "$tmp" "$@" 2>/dev/null; then
        echo "a table that differs from the definitions passed the check"
        exit 1
fi
echo "validate-schema.h matches Visier's definitions"
exit 0

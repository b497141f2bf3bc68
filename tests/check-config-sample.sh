#!/bin/sh
# SPDX-License-Identifier: Apache-2.0
# The sample configuration etc/visierd.conf is what tools/gen-config-sample.py makes from the
# configuration table today: every key of every section at its default. The check must be
# able to fail: a sample with one key's line removed is refused. Skips without python3.
set -u
top=${TOP_SRCDIR:-$(dirname "$0")/..}
gen="$top/tools/gen-config-sample.py"
if ! command -v python3 >/dev/null 2>&1; then
        echo "python3 not installed: skipping"
        exit 77
fi
if ! python3 "$gen" --check "$top"; then
        exit 1
fi
# Mutation: drop one key's line from a copy; the check must notice.
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/etc" "$work/src/visierd"
cp "$top/src/visierd/config.c" "$top/src/visierd/config.h" "$work/src/visierd/"
grep -v '^#batch_max = ' "$top/etc/visierd.conf" > "$work/etc/visierd.conf"
if python3 "$gen" --check "$work" >/dev/null; then
        echo "the check did not notice a missing key"
        exit 1
fi
echo "etc/visierd.conf matches the configuration table"

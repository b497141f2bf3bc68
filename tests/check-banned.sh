#!/bin/sh
# SPDX-License-Identifier: Apache-2.0
# Fails if any source uses a function the project bans (unbounded copies and unchecked
# number parsing). Prints the offending lines.
set -u
top=${TOP_SRCDIR:-$(dirname "$0")/..}
hits=$(grep -rnE '\b(sprintf|vsprintf|strcpy|strcat|gets|atoi|atol|atoll)[[:space:]]*\(' \
        "$top/src" "$top/tests" --include='*.c' --include='*.h' | grep -vE '^[^:]+:[0-9]+:[[:space:]]*(/?\*|//)')
if [ -n "$hits" ]; then
        echo "banned functions in use (use snprintf, bounded copies, strtol with checks):"
        echo "$hits"
        exit 1
fi
echo "no banned functions"
exit 0

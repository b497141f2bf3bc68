#!/bin/sh
# SPDX-License-Identifier: Apache-2.0
# The systemd units verify cleanly, the service sets LimitCORE=0 and its hardening scores 1.1 or lower
# (`systemd-analyze security --offline=true`). Skips where systemd-analyze is missing.
set -u
top=${TOP_SRCDIR:-$(dirname "$0")/..}
build=${TOP_BUILDDIR:-.}
if ! command -v systemd-analyze >/dev/null 2>&1; then
        echo "systemd-analyze not installed: skipping"
        exit 77
fi
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
# Verify a copy whose ExecStart names the freshly built binary (verify checks it exists).
sed "s|^ExecStart=[^ ]*visierd |ExecStart=$build/visierd |" "$build/systemd/visierd.service" > "$work/visierd.service"
cp "$top/systemd/visierd.socket" "$work/visierd.socket"
fail=0
out=$(cd "$work" && systemd-analyze verify --man=no ./visierd.service ./visierd.socket 2>&1)
if [ -n "$out" ]; then
        echo "systemd-analyze verify:"
        echo "$out"
        fail=1
fi
score=$(systemd-analyze security --offline=true "$work/visierd.service" 2>&1 |
        sed -n 's/.*Overall exposure level for visierd.service: \([0-9.]*\).*/\1/p')
echo "exposure level: ${score:-unknown}"
if [ -z "$score" ] || ! awk -v s="$score" 'BEGIN { exit !(s <= 1.1) }'; then
        echo "the service's exposure level must be 1.1 or lower"
        systemd-analyze security --offline=true "$work/visierd.service" 2>&1 | grep '✗'
        fail=1
fi
# The process holds the API key and the password: no core dumps.
if ! grep -q '^LimitCORE=0$' "$work/visierd.service"; then
        echo "visierd.service must set LimitCORE=0"
        fail=1
fi
exit $fail

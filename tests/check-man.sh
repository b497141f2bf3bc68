#!/bin/sh
# SPDX-License-Identifier: Apache-2.0
# Every man page is clean under `mandoc -T lint` (warnings and worse). Skips without mandoc.
set -u
top=${TOP_SRCDIR:-$(dirname "$0")/..}
if ! command -v mandoc >/dev/null 2>&1; then
        echo "mandoc not installed: skipping"
        exit 77
fi
out=$(mandoc -T lint -W warning "$top"/man/*.[0-9] 2>&1)
if [ -n "$out" ]; then
        echo "$out"
        exit 1
fi
echo "man pages lint clean"

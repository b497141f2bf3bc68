#!/bin/sh
# SPDX-License-Identifier: Apache-2.0
# What the man pages claim about the code, checked against the code where a script can:
# the sections visierd.conf(5) names are those of the configuration table (and [client NAME]);
# the signals visierd(8) describes are those visierd handles, and a SIGHUP reload is
# documented in visierd.conf(5) when visierd handles SIGHUP. Each check must be able to fail:
# a mutation run feeds it a page with one claim removed.
set -u
top=${TOP_SRCDIR:-$(dirname "$0")/..}
conf5="$top/man/visierd.conf.5"
man8="$top/man/visierd.8"
config_c="$top/src/visierd/config.c"
manager_c="$top/src/visierd/manager.c"

check() { # CONF5 MAN8: prints what is wrong, fails if anything is
        bad=0
        # Sections: the table's, in the sentence "The sections are ...".
        table=$(sed -n 's/^ *KEY_[A-Z]*("\([a-z]*\)",.*/\1/p' "$config_c" | sort -u)
        named=$(sed -n '/^The sections are$/,/^\.Cm \[client/p' "$1" | sed -n 's/^\.Cm \[\([a-z]*\)\].*/\1/p' | sort -u)
        if [ "$table" != "$named" ]; then
                echo "visierd.conf(5) names the sections '$(echo $named)'; the table has '$(echo $table)'"
                bad=1
        fi
        grep -q '^\.Cm \[client Ar NAME' "$1" || { echo "visierd.conf(5) does not name [client NAME]"; bad=1; }
        # Signals: those manager.c hands to sd_event_add_signal, as the SIGNALS section lists them.
        code=$(sed -n 's/.*sd_event_add_signal([^,]*, [^,]*, \(SIG[A-Z]*\),.*/\1/p' "$manager_c" | sort -u)
        doc=$(sed -n '/^\.Sh SIGNALS/,/^\.Sh /p' "$2" | sed -n 's/^\.It Dv //p' | tr -d ' ' | tr ',' '\n' | sort -u)
        if [ "$code" != "$doc" ]; then
                echo "visierd(8) SIGNALS lists '$(echo $doc)'; visierd handles '$(echo $code)'"
                bad=1
        fi
        if echo "$code" | grep -qx SIGHUP && ! grep -q '^\.Dv SIGHUP' "$1"; then
                echo "visierd reloads on SIGHUP, but visierd.conf(5) does not say so"
                bad=1
        fi
        return $bad
}

check "$conf5" "$man8" || exit 1
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
grep -v '^\.Cm \[policy\] ,$' "$conf5" > "$work/conf5"
sed '/^\.It Dv SIGHUP$/d' "$man8" > "$work/man8"
if check "$work/conf5" "$man8" >/dev/null || check "$conf5" "$work/man8" >/dev/null; then
        echo "a check did not notice a claim removed"
        exit 1
fi
echo "the man pages' sections and signals match the code"

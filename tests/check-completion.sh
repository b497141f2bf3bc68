#!/bin/sh
# SPDX-License-Identifier: Apache-2.0
# The bash completion offers every command visierctl's usage lists, each command's options as
# its synopsis names them, and the global options. The check must be able to fail: it is run
# again on a copy of the script with a command and an option taken out, and must notice.
set -u
top=${TOP_SRCDIR:-$(dirname "$0")/..}
ctl=${TOP_BUILDDIR:-.}/visierctl
script="$top/shell-completion/bash/visierctl"
command -v bash >/dev/null 2>&1 || { echo "bash not installed: skipping"; exit 77; }
help=$("$ctl" --help) || { echo "cannot run $ctl --help"; exit 1; }

check() { # SCRIPT: prints what is missing, fails if anything is
        printf '%s\n' "$help" | bash -c '
                . "$1" || exit 1
                offered() { # WORDS... : what the completion offers for the last word
                        COMP_WORDS=("$@"); COMP_CWORD=$(($# - 1)); COMPREPLY=()
                        _visierctl
                        printf "%s\n" "${COMPREPLY[@]}"
                }
                bad=0 section="" cmd=""
                while IFS= read -r line; do
                        case $line in
                        Commands:) section=commands; continue ;;
                        Options*) section=options; continue ;;
                        "Exit status:") section=""; continue ;;
                        "") [ "$section" = commands ] && section=""; continue ;;
                        esac
                        case $section in
                        commands)
                                case $line in
                                "  "[a-z]*) set -- $line; cmd=$1
                                        offered visierctl "" | grep -qx -- "$cmd" ||
                                                { echo "the completion does not offer the command $cmd"; bad=1; } ;;
                                esac
                                for opt in $(printf "%s\n" "$line" | grep -oE -- "(^|[[ ])(--[a-z-]+|-o)" | tr -d "[ "); do
                                        offered visierctl "$cmd" "-" | grep -qx -- "$opt" ||
                                                { echo "the completion does not offer $opt after $cmd"; bad=1; }
                                done ;;
                        options)
                                for opt in $(printf "%s\n" "$line" | grep -oE -- "^  (-h, )?--[a-z-]+" | grep -oE -- "--[a-z-]+"); do
                                        offered visierctl "-" | grep -qx -- "$opt" ||
                                                { echo "the completion does not offer the option $opt"; bad=1; }
                                done ;;
                        esac
                done
                [ "$cmd" ] || { echo "no command found in visierctl --help"; bad=1; }
                exit $bad
        ' check "$1"
}

check "$script" || exit 1
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
sed 's/ top / /' "$script" > "$work/no-top"
sed '/^ *jobs) opts=/s/ --since / /' "$script" > "$work/no-since"
if check "$work/no-top" >/dev/null || check "$work/no-since" >/dev/null; then
        echo "the check did not notice a command or an option taken out of the completion"
        exit 1
fi
echo "the bash completion offers every command and option visierctl's usage lists"

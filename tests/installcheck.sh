#!/bin/sh
# SPDX-License-Identifier: Apache-2.0
# The installed tree runs as its unit would run it (make installcheck; distcheck runs it on
# the tree it installed):
#   tests/installcheck.sh DESTDIR SBINDIR BINDIR CONFDIR STATEDIR
# The installed sample configuration, with base_url and username pointed at a throwaway
# visier-sim and the secrets handed over as systemd credentials (as LoadCredential= does), is
# what the installed visierd reads with no --config; the job database appears in the state
# directory and the named-export directory is the installed one. Skips (77) with a DESTDIR:
# the compiled-in paths do not include it. Needs python3 (for its HTTP client).
set -eu
destdir=$1 sbindir=$2 bindir=$3 confdir=$4 statedir=$5
if [ -n "$destdir" ]; then
        echo "installed under DESTDIR=$destdir: its compiled-in paths name the final locations; skipping"
        exit 77
fi
# Never on a live installation: the check rewrites the installed configuration for a while and
# runs a visierd on the state directory.
if [ -e "$statedir/visierd.db" ] || [ -e "$statedir/visierd.db.lock" ]; then
        echo "installcheck: $statedir already holds a job database (a live installation?); skipping"
        exit 77
fi
case $confdir in
/etc/*)
        echo "installcheck: $confdir is a system configuration directory; run it on a scratch prefix (as distcheck does); skipping"
        exit 77
        ;;
esac
visierd=$sbindir/visierd
sim=$bindir/visier-sim
conf=$confdir/visierd.conf
for f in "$visierd" "$sim" "$conf"; do
        [ -e "$f" ] || { echo "installcheck: $f was not installed"; exit 1; }
done
[ -d "$confdir/exports.d" ] || { echo "installcheck: $confdir/exports.d was not installed"; exit 1; }
work=$(mktemp -d)
sim_pid="" vd_pid=""
cleanup() {
        [ -n "$vd_pid" ] && kill "$vd_pid" 2>/dev/null && wait "$vd_pid" 2>/dev/null
        [ -n "$sim_pid" ] && kill "$sim_pid" 2>/dev/null && wait "$sim_pid" 2>/dev/null
        [ -f "$work/visierd.conf.installed" ] && cp "$work/visierd.conf.installed" "$conf"
        rm -rf "$work"
}
get() { # URL: the body of a 200 answer, or fail
        python3 -c 'import sys, urllib.request; sys.stdout.write(urllib.request.urlopen(sys.argv[1], timeout=5).read().decode())' "$1" 2>/dev/null
}
trap cleanup EXIT
probe() { # CONDITION: up to 10 s
        i=0
        until eval "$1"; do
                i=$((i + 1))
                [ "$i" -gt 200 ] && { echo "installcheck: timed out waiting for: $1"; exit 1; }
                sleep 0.05
        done
}

umask 077
mkdir "$work/credentials"
head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n' > "$work/credentials/visier-apikey"
head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n' > "$work/credentials/visier-password"
"$sim" --listen 127.0.0.1 --port 0 --port-file "$work/sim.port" --username installcheck \
        --apikey-file "$work/credentials/visier-apikey" --password-file "$work/credentials/visier-password" \
        2>"$work/sim.log" &
sim_pid=$!
probe "[ -s '$work/sim.port' ]"

# The installed sample, pointed at the sim, on a free port.
cp "$conf" "$work/visierd.conf.installed"
sed -e "s|^base_url = .*|base_url = http://127.0.0.1:$(cat "$work/sim.port")|" \
        -e "s|^username = .*|username = installcheck|" -e "s|^#port = 8420$|port = 0|" \
        "$work/visierd.conf.installed" > "$conf"
mkdir -p "$statedir"
CREDENTIALS_DIRECTORY=$work/credentials "$visierd" 2>"$work/visierd.log" &
vd_pid=$!
probe "grep -q 'serving Visier' '$work/visierd.log'"
port=$(sed -n 's|.* on http://127.0.0.1:\([0-9]*\)/ .*|\1|p' "$work/visierd.log" | head -n 1)
probe "get http://127.0.0.1:$port/readyz >/dev/null"
status=$(get "http://127.0.0.1:$port/status")
cp "$work/visierd.conf.installed" "$conf"
case $status in
*"\"path\":\"$statedir/visierd.db\""*) ;;
*) echo "installcheck: the job database is not $statedir/visierd.db: $status"; exit 1 ;;
esac
[ -f "$statedir/visierd.db" ] || { echo "installcheck: no $statedir/visierd.db"; exit 1; }
kill "$vd_pid"
wait "$vd_pid" || { echo "installcheck: visierd did not stop cleanly"; cat "$work/visierd.log"; exit 1; }
vd_pid=""
rm -f "$statedir"/visierd.db*
echo "installcheck: the installed visierd read $conf and kept its database in $statedir"

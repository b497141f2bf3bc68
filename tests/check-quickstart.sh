#!/bin/sh
# SPDX-License-Identifier: Apache-2.0
# tools/quickstart's build step keeps no object built with other flags: `quickstart dev` after
# `quickstart test` (and the other way round) must rebuild everything, not relink ASan objects
# into a --dev binary. The build() function is taken from tools/quickstart as it is and run on a
# stand-in project whose configure writes a Makefile that records the flags each object and
# each link was made with; the checks read those records. A mutation run (build() without its
# make clean) must fail the same checks.
set -u
top=${TOP_SRCDIR:-$(dirname "$0")/..}
qs="$top/tools/quickstart"
scratch=$(mktemp -d "${TMPDIR:-/tmp}/check-quickstart.XXXXXX")
trap 'rm -rf "$scratch"' EXIT

sed -n '/^build() {$/,/^}$/p' "$qs" > "$scratch/build.sh"
grep -q 'make clean' "$scratch/build.sh" || { echo "no build() with make clean in $qs"; exit 1; }

# The stand-in: configure bakes its arguments into a Makefile in which obj.o and prog keep the
# flags they were built with; make only rebuilds what is missing, as automake's rules do when
# only configure's arguments change (objects do not depend on the flags).
stand_in() {
        rm -rf "$1"
        mkdir -p "$1"
        : > "$1/configure.ac"
        cat > "$1/configure" <<'CONF'
#!/bin/sh
echo "configure $*" >> ../configure-runs
cat > Makefile <<MK
FLAGS = $*
all: prog
obj.o:
	echo "\$(FLAGS)" > obj.o
prog: obj.o
	{ cat obj.o; echo "linked with \$(FLAGS)"; } > prog
clean:
	rm -f obj.o prog
MK
CONF
        chmod +x "$1/configure"
        touch -d '2000-01-01' "$1/configure.ac"
}

# run TOP BUILD_SH DIR ARGS...: the build function in TOP, output to TOP/out
run() {
        t=$1 b=$2
        shift 2
        (top=$t; nproc() { echo 1; }; . "$b"; build "$@") > "$t/out" 2>&1
}

check() { # BUILD_SH: prints what is wrong, fails if anything is
        t="$scratch/project"
        bad=0
        stand_in "$t"
        run "$t" "$1" build --enable-asan --enable-ubsan || { echo "first build failed: $(cat "$t/out")"; return 1; }
        run "$t" "$1" build --enable-werror || { echo "second build failed: $(cat "$t/out")"; return 1; }
        want="--enable-werror
linked with --enable-werror"
        if [ "$(cat "$t/build/prog")" != "$want" ]; then
                echo "after a flag change the program holds: $(cat "$t/build/prog" | tr '\n' '|')"
                bad=1
        fi
        # The same flags again: nothing is configured anew.
        run "$t" "$1" build --enable-werror
        if [ "$(wc -l < "$t/configure-runs")" -ne 2 ]; then
                echo "configure ran $(wc -l < "$t/configure-runs") times for two flag sets"
                bad=1
        fi
        # And back: the sanitizer flags reach every object again.
        run "$t" "$1" build --enable-asan --enable-ubsan
        if ! grep -qx -- "--enable-asan --enable-ubsan" "$t/build/obj.o"; then
                echo "after changing back the object holds: $(cat "$t/build/obj.o")"
                bad=1
        fi
        return $bad
}

if ! out=$(check "$scratch/build.sh"); then
        echo "FAIL: $out"
        exit 1
fi
# Mutation: without the make clean, a stale object survives the flag change.
sed 's/\[ -f Makefile \] && make clean >\/dev\/null/:/' "$scratch/build.sh" > "$scratch/mutant.sh"
if cmp -s "$scratch/build.sh" "$scratch/mutant.sh"; then
        echo "FAIL: the mutation did not change build()"
        exit 1
fi
if check "$scratch/mutant.sh" > /dev/null; then
        echo "FAIL: the check passes on a build() that keeps stale objects"
        exit 1
fi
echo "quickstart's build step rebuilds on a flag change (and the check catches one that does not)"

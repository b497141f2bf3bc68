#!/usr/bin/env python3
# SPDX-License-Identifier: Apache-2.0
"""Write etc/visierd.conf, the sample configuration, from the configuration table in
src/visierd/config.c (config_keys[]): every key of every section, commented out at its
default, under its help text, and a [client NAME] section to copy.

    tools/gen-config-sample.py [--check] [TOP_SRCDIR]

--check compares instead of writing and fails (exit 1) naming the first difference; it is
what tests/check-config-sample.sh runs, so the sample cannot drift from the table."""

import re
import sys
import textwrap

HEADER = """\
# visierd configuration (see visierd.conf(5)). Lines starting with # or ; are comments.
# Every key is listed, commented out at its default. Check a file with:
#   visierd --check-config --config /etc/visierd/visierd.conf
# This file is generated from the configuration table by tools/gen-config-sample.py.
"""

# Keys that have no default but are required: the sample gives them an example value.
EXAMPLES = {
    ("visier", "base_url"): "https://example.api.visier.io",
    ("visier", "username"): "api-user@example.com",
}

# Macros the table's strings use: the build's directories as an installed system spells
# them, and the credential names (config.h).
PREFIXES = {"STATEDIR": "/var/lib/visierd", "CONFDIR": "/etc/visierd"}


def macros(top):
    found = dict(PREFIXES)
    for m in re.finditer(r'#define (CREDENTIAL_[A-Z_]+) "([^"]*)"', open(f"{top}/src/visierd/config.h").read()):
        found[m.group(1)] = m.group(2)
    return found

CLIENT = """\
# [client NAME] sections: once any exists, every route but /healthz and /readyz needs
# "Authorization: Bearer TOKEN" with one of their tokens (or a sign-in session of theirs).
# token_file: at least 32 bytes of at least 8 different characters (openssl rand -hex 32),
# mode 0600; role: read (reads, job status, /status, /metrics), write (also permission
# writes, cancelling its own jobs) or admin (everything).
#[client reporting]
#token_file = /etc/visierd/tokens/reporting
#role = read
"""


def c_args(text, start):
    """The arguments of the call whose '(' is at text[start], as source fragments."""
    args, cur, depth, i = [], "", 0, start + 1
    while i < len(text):
        ch = text[i]
        if ch == '"':
            j = i + 1
            while text[j] != '"':
                j += 2 if text[j] == "\\" else 1
            cur += text[i:j + 1]
            i = j + 1
            continue
        if ch == "(":
            depth += 1
        elif ch == ")":
            if depth == 0:
                args.append(cur.strip())
                return args, i
            depth -= 1
        elif ch == "," and depth == 0:
            args.append(cur.strip())
            cur = ""
            i += 1
            continue
        cur += ch
        i += 1
    raise SystemExit("gen-config-sample: unterminated KEY_ macro")


def c_string(fragment, names=PREFIXES):
    """A C string expression (literals, concatenation, the macros in NAMES) as text, or None
    for NULL."""
    if fragment == "NULL":
        return None
    out = ""
    for m in re.finditer(r'"((?:[^"\\]|\\.)*)"|([A-Z_]+)', fragment):
        if m.group(1) is not None:
            out += bytes(m.group(1), "utf-8").decode("unicode_escape")
        else:
            out += names[m.group(2)]
    return out


def read_table(top):
    src = open(f"{top}/src/visierd/config.c", encoding="utf-8").read()
    body = src[src.index("const ConfigKey config_keys[] = {"):]
    body = body[:body.index("\n        {},\n};")]
    keys, names = [], macros(top)
    for m in re.finditer(r"KEY_(UINT|STRING)\(", body):
        args, _ = c_args(body, m.end() - 1)
        section, name = c_string(args[0], names), c_string(args[1], names)
        default = c_string(args[3], names)
        help_text = c_string(args[-1], names)
        keys.append((section, name, default, help_text))
    return keys


def render(keys):
    out, section = [HEADER], None
    for sec, name, default, help_text in keys:
        if sec != section:
            if sec == "store":  # the [client NAME] sections come after [listen]'s and [policy]'s keys
                out.append("\n" + CLIENT)
            out.append(f"\n[{sec}]\n")
            section = sec
        help_line = help_text[0].upper() + help_text[1:]
        for line in textwrap.wrap(help_line + ".", 92):
            out.append(f"# {line}\n")
        if (sec, name) in EXAMPLES:
            out.append(f"{name} = {EXAMPLES[(sec, name)]}\n")
        else:
            out.append(f"#{name} = {default if default is not None else ''}".rstrip() + "\n")
    return "".join(out)


def main(argv):
    check = "--check" in argv
    rest = [a for a in argv if a != "--check"]
    top = rest[0] if rest else "."
    text = render(read_table(top))
    path = f"{top}/etc/visierd.conf"
    if check:
        have = open(path, encoding="utf-8").read()
        if have != text:
            for n, (a, b) in enumerate(zip(have.splitlines(), text.splitlines()), 1):
                if a != b:
                    print(f"{path}:{n}: is '{a}', the table gives '{b}'")
                    break
            else:
                print(f"{path}: its length differs from what the table gives")
            print("run tools/gen-config-sample.py to write it again")
            return 1
        return 0
    with open(path, "w", encoding="utf-8") as f:
        f.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

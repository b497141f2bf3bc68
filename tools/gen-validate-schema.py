#!/usr/bin/env python3
# SPDX-License-Identifier: Apache-2.0
"""Generate src/visierd/validate-schema.h from Visier's OpenAPI definitions.

The table holds every member of the request-body schemas of the six permission writes
visierd queues, recursively: nested DTOs, arrays, enums with their allowed values, and the
JSON type of each member. The request-body schema of each operation is found from its path
and method under `paths:`, never written down here by name.

Run by hand when Visier's definitions change, from the top of the source tree:

    tools/gen-validate-schema.py ../shared/visier-api/administration-apis.yaml \\
        ../shared/visier-api/visier-subset.yaml > src/visierd/validate-schema.h

The first file is the source of the table; every later file is a cross-check: a schema it
defines that the table uses must have the same shape there, or the generator fails. With
--check FILE the generator writes nothing and exits 1 when FILE differs from what it would
write (tests/check-validate-schema.sh runs it that way).

Standard library only: there is no YAML parser on a fresh machine, so this file parses the
subset of YAML that OpenAPI definitions use (block mappings and sequences, indentless
sequences, plain, single- and double-quoted scalars over several lines, empty flow
collections, flow sequences of plain scalars, anchors and aliases of entry values). It fails
loudly on anything else.
"""

import re
import sys

# The writes visierd queues, as JobOp names them (src/visierd/jobs.h): method and path.
OPERATIONS = [
    ("JOB_OP_CREATE", "post", "/v1/admin/permissions"),
    ("JOB_OP_UPDATE", "put", "/v1/admin/permissions"),
    ("JOB_OP_DELETE", "delete", "/v1/admin/permissions"),
    ("JOB_OP_ASSIGN", "put", "/v1/admin/permissions/users"),
    ("JOB_OP_REMOVE", "delete", "/v1/admin/permissions/users"),
    ("JOB_OP_REVERT", "post", "/v1/admin/permissions/revert-to-parent"),
]

# OpenAPI string formats that do not constrain the JSON value beyond "a string" here.
STRING_FORMATS = {None, "enum", "uuid", "date-time", "date", "byte", "binary", "password"}

# Integer formats and the bounds they put on the JSON value, as C expressions.
INTEGER_RANGES = {
    "int32": ("INT32_MIN", "INT32_MAX"),
    "int64": ("INT64_MIN", "INT64_MAX"),
    "sint32": ("INT32_MIN", "INT32_MAX"),
    "uint32": ("0", "UINT32_MAX"),
}


class YamlError(Exception):
    pass


# ---------------------------------------------------------------------------------------
# A small YAML reader.


class Line:
    __slots__ = ("no", "indent", "text", "blanks")

    def __init__(self, no, indent, text, blanks=0):
        # blanks: how many empty lines came just before (they fold to line breaks in scalars).
        self.no, self.indent, self.text, self.blanks = no, indent, text, blanks


def yaml_lines(text):
    out, blanks = [], 0
    for no, raw in enumerate(text.split("\n"), 1):
        if "\t" in raw[: len(raw) - len(raw.lstrip(" \t"))]:
            raise YamlError(f"line {no}: tab in indentation")
        stripped = raw.rstrip()
        if not stripped.strip():
            blanks += 1
            continue
        body = stripped.lstrip(" ")
        if body.startswith("#") or body in ("---", "..."):
            if body.startswith("#"):
                continue
            raise YamlError(f"line {no}: multiple documents are not supported")
        out.append(Line(no, len(stripped) - len(body), body, blanks))
        blanks = 0
    return out


KEY_RE = re.compile(r"""^(?:'((?:[^']|'')*)'|"((?:[^"\\]|\\.)*)"|([^'"\s#\-?:,\[\]{}][^#]*?|-[^\s#][^#]*?))\s*:(?:\s+|$)""")


def split_key(text):
    """(key, rest) when text is a mapping entry, else None."""
    m = KEY_RE.match(text)
    if not m:
        return None
    if m.group(1) is not None:
        key = m.group(1).replace("''", "'")
    elif m.group(2) is not None:
        key = decode_double(m.group(2))
    else:
        key = m.group(3)
        if ": " in key:
            return None
    return key, text[m.end():]


def decode_double(s):
    out, i = [], 0
    escapes = {"n": "\n", "t": "\t", '"': '"', "\\": "\\", "/": "/", "r": "\r", "0": "\0", " ": " "}
    while i < len(s):
        c = s[i]
        if c == "\\":
            i += 1
            if i >= len(s):
                break
            e = s[i]
            if e in escapes:
                out.append(escapes[e])
            elif e == "u":
                out.append(chr(int(s[i + 1 : i + 5], 16)))
                i += 4
            else:
                raise YamlError(f"unknown escape \\{e}")
        else:
            out.append(c)
        i += 1
    return "".join(out)


def fold(first, more):
    """Join the lines of a multi-line flow scalar: a line break becomes one space, and n empty
    lines become n line breaks."""
    out = first.strip()
    for text, blanks in more:
        out += ("\n" * blanks if blanks else " ") + text.strip()
    return out


def parse_scalar(first, more, no):
    """A scalar whose first line is `first` and whose continuation lines are `more`."""
    if first.startswith("'"):
        text = fold(first, more)
        if len(text) < 2 or not text.endswith("'"):
            raise YamlError(f"line {no}: unterminated single-quoted scalar")
        return text[1:-1].replace("''", "'")
    if first.startswith('"'):
        # A line ending in a backslash continues without a space; others fold to a space.
        buf = first
        for p, blanks in more:
            p = p.strip()
            if (len(buf) - len(buf.rstrip("\\"))) % 2 == 1:
                buf = buf[:-1] + p  # an escaped line break: nothing in between
            else:
                buf = buf + ("\n" * blanks if blanks else " ") + p
        if len(buf) < 2 or not buf.endswith('"'):
            raise YamlError(f"line {no}: unterminated double-quoted scalar")
        return decode_double(buf[1:-1])
    text = fold(first, more)
    if text == "{}":
        return {}
    if text == "[]":
        return []
    if text.startswith("[") and text.endswith("]"):
        items = [x.strip() for x in text[1:-1].split(",")]
        if any(not x or x[0] in "'\"[{" for x in items):
            raise YamlError(f"line {no}: flow sequence not supported: {text}")
        return [plain_value(x) for x in items]
    if text.startswith("{") or text.startswith("[") or text.startswith("&") or text.startswith("*") \
            or text.startswith("!") or text.startswith("|") or text.startswith(">"):
        raise YamlError(f"line {no}: unsupported YAML construct: {text[:40]}")
    return plain_value(text)


def plain_value(text):
    if text in ("true", "True", "TRUE"):
        return True
    if text in ("false", "False", "FALSE"):
        return False
    if text in ("null", "~", "Null", "NULL"):
        return None
    if re.fullmatch(r"-?[0-9]+", text):
        return int(text)
    return text


class Reader:
    def __init__(self, lines):
        self.lines, self.i, self.anchors = lines, 0, {}

    def peek(self):
        return self.lines[self.i] if self.i < len(self.lines) else None

    def continuation(self, indent):
        """The lines after the current one that are indented deeper than `indent`."""
        more = []
        while self.peek() and self.peek().indent > indent:
            more.append((self.peek().text, self.peek().blanks))
            self.i += 1
        return more

    def node(self, indent):
        """The block node starting at the current line, whose indentation is at least `indent`."""
        ln = self.peek()
        if ln is None or ln.indent < indent:
            return None
        if ln.text == "-" or ln.text.startswith("- "):
            return self.sequence(ln.indent)
        if split_key(ln.text):
            return self.mapping(ln.indent)
        self.i += 1
        return parse_scalar(ln.text, self.continuation(ln.indent), ln.no)

    def value_after(self, rest, indent, no, seq_ok):
        """The value of an entry at `indent` whose text after the indicator is `rest`."""
        m = re.match(r"^([&*])([A-Za-z0-9_-]+)\s*", rest)
        if m and m.group(1) == "*":
            if m.end() != len(rest) or m.group(2) not in self.anchors:
                raise YamlError(f"line {no}: unknown or malformed alias {rest[:40]}")
            return self.anchors[m.group(2)]
        if m:
            value = self.value_after(rest[m.end():], indent, no, seq_ok)
            self.anchors[m.group(2)] = value
            return value
        if rest:
            return parse_scalar(rest, self.continuation(indent), no)
        nxt = self.peek()
        if nxt and nxt.indent > indent:
            return self.node(indent + 1)
        if seq_ok and nxt and nxt.indent == indent and (nxt.text == "-" or nxt.text.startswith("- ")):
            return self.sequence(indent)
        return None

    def mapping(self, indent):
        out = {}
        while True:
            ln = self.peek()
            if ln is None or ln.indent < indent:
                return out
            if ln.indent > indent:
                raise YamlError(f"line {ln.no}: unexpected indentation")
            kv = split_key(ln.text)
            if not kv:
                if ln.text == "-" or ln.text.startswith("- "):
                    return out
                raise YamlError(f"line {ln.no}: expected a mapping entry: {ln.text[:40]}")
            key, rest = kv
            if key in out:
                raise YamlError(f"line {ln.no}: duplicate key {key}")
            self.i += 1
            out[key] = self.value_after(rest, indent, ln.no, True)

    def sequence(self, indent):
        out = []
        while True:
            ln = self.peek()
            if ln is None or ln.indent != indent or not (ln.text == "-" or ln.text.startswith("- ")):
                if ln is not None and ln.indent > indent:
                    raise YamlError(f"line {ln.no}: unexpected indentation")
                return out
            rest = ln.text[1:].lstrip(" ")
            col = indent + (len(ln.text) - len(rest))
            if rest and (rest == "-" or rest.startswith("- ") or split_key(rest)):
                # "- key: value" (or a nested "- - x"): the rest starts a block at its own column.
                self.lines[self.i] = Line(ln.no, col, rest)
                out.append(self.node(col))
            else:
                self.i += 1
                out.append(self.value_after(rest, indent, ln.no, False))


def yaml_load(text):
    lines = yaml_lines(text)
    r = Reader(lines)
    doc = r.node(0)
    if r.peek() is not None:
        raise YamlError(f"line {r.peek().no}: trailing content")
    return doc


# ---------------------------------------------------------------------------------------
# From OpenAPI schemas to a normalised tree.


class SchemaError(Exception):
    pass


def ref_name(ref):
    prefix = "#/components/schemas/"
    if not isinstance(ref, str) or not ref.startswith(prefix):
        raise SchemaError(f"unsupported $ref {ref!r}")
    return ref[len(prefix):]


def unwrap(s, where):
    """A property schema with description-only allOf wrappers removed: a $ref name or an inline schema."""
    if not isinstance(s, dict):
        raise SchemaError(f"{where}: schema is not a mapping")
    if "$ref" in s:
        return ref_name(s["$ref"])
    if "allOf" in s:
        parts = s["allOf"]
        extra = set(s) - {"allOf", "description"}
        if len(parts) != 1 or extra:
            raise SchemaError(f"{where}: allOf with several parts or siblings {sorted(extra)} not supported")
        return unwrap(parts[0], where)
    for k in ("oneOf", "anyOf", "not"):
        if k in s:
            raise SchemaError(f"{where}: {k} not supported")
    return s


def shape(s, where, seen):
    """A normalised, comparable description of schema s; named schemas are referred to by name."""
    s = unwrap(s, where)
    if isinstance(s, str):
        seen.append(s)
        return ("ref", s)
    t = s.get("type")
    if t is None and "properties" in s:
        t = "object"
    if "enum" in s:
        if t not in (None, "string"):
            raise SchemaError(f"{where}: enum of type {t} not supported")
        vals = s["enum"]
        if not all(isinstance(v, str) for v in vals):
            raise SchemaError(f"{where}: enum values must be strings")
        return ("enum", tuple(vals))
    if t == "string":
        if s.get("format") not in STRING_FORMATS:
            raise SchemaError(f"{where}: string format {s.get('format')} not supported")
        return ("string",)
    if t == "boolean":
        return ("boolean",)
    if t == "integer":
        fmt = s.get("format") or "int64"
        if fmt not in INTEGER_RANGES:
            raise SchemaError(f"{where}: integer format {fmt} not supported")
        return ("integer", fmt)
    if t == "number":
        if s.get("format") not in (None, "double", "float"):
            raise SchemaError(f"{where}: number format {s.get('format')} not supported")
        return ("number",)
    if t == "array":
        if "items" not in s:
            raise SchemaError(f"{where}: array without items")
        return ("array", shape(s["items"], where + "[]", seen))
    if t == "object":
        props = s.get("properties", {}) or {}
        addl = s.get("additionalProperties")
        if addl not in (None, False) and props:
            raise SchemaError(f"{where}: object with both properties and additionalProperties not supported")
        if addl not in (None, False):
            if addl is True:
                raise SchemaError(f"{where}: free-form object not supported")
            return ("map", shape(addl, where + "{}", seen))
        required = set(s.get("required", []) or [])
        unknown = required - set(props)
        if unknown:
            raise SchemaError(f"{where}: required members not defined: {sorted(unknown)}")
        members = tuple((k, k in required, shape(v, f"{where}.{k}", seen)) for k, v in props.items())
        return ("object", members)
    raise SchemaError(f"{where}: unsupported schema (type {t!r})")


def request_schema(doc, method, path):
    try:
        op = doc["paths"][path][method]
    except (KeyError, TypeError):
        return None
    body = op.get("requestBody") or {}
    try:
        s = body["content"]["application/json"]["schema"]
    except (KeyError, TypeError):
        raise SchemaError(f"{method.upper()} {path}: no application/json request body")
    s = unwrap(s, f"{method.upper()} {path}")
    if not isinstance(s, str):
        raise SchemaError(f"{method.upper()} {path}: request body is not a named schema")
    return s


def collect(doc, roots, where):
    """Every named schema reachable from roots, as {name: shape}, in a stable order."""
    schemas = doc.get("components", {}).get("schemas", {})
    out, todo = {}, list(roots)
    while todo:
        name = todo.pop(0)
        if name in out:
            continue
        if name not in schemas:
            raise SchemaError(f"{where}: schema {name} is referenced but not defined")
        seen = []
        out[name] = shape(schemas[name], name, seen)
        if out[name][0] != "object":
            raise SchemaError(f"{where}: named schema {name} is not an object")
        todo.extend(seen)
    return out


# ---------------------------------------------------------------------------------------
# C output.


def c_ident(name):
    return "schema_" + re.sub(r"[^A-Za-z0-9]", "_", name)


def c_string(s):
    out = []
    for ch in s:
        if ch in '"\\':
            out.append("\\" + ch)
        elif 0x20 <= ord(ch) < 0x7f:
            out.append(ch)
        else:
            raise SchemaError(f"non-ASCII or control character in {s!r}")
    return '"' + "".join(out) + '"'


class Emitter:
    def __init__(self):
        self.inline = {}   # shape -> identifier of an unnamed node
        self.defs = []     # lines for unnamed nodes, in dependency order

    def ref(self, sh):
        """The C expression (a pointer) for shape sh; emits unnamed nodes as needed."""
        kind = sh[0]
        if kind == "ref":
            return "&" + c_ident(sh[1])
        if sh in self.inline:
            return "&" + self.inline[sh]
        # Unnamed nodes are named after what they hold, so that equal nodes are one node.
        if kind == "string":
            ident, body = "node_string", "{ .type = VALIDATE_STRING }"
        elif kind == "boolean":
            ident, body = "node_boolean", "{ .type = VALIDATE_BOOLEAN }"
        elif kind == "number":
            ident, body = "node_number", "{ .type = VALIDATE_NUMBER }"
        elif kind == "integer":
            ident = "node_integer_" + sh[1]
            lo, hi = INTEGER_RANGES[sh[1]]
            body = f"{{ .type = VALIDATE_INTEGER, .int_min = {lo}, .int_max = {hi} }}"
        elif kind == "enum":
            ident = "node_enum_" + "_".join(re.sub(r"[^A-Za-z0-9]", "_", v) for v in sh[1])[:60]
            vals = ", ".join(c_string(v) for v in sh[1])
            self.defs.append(f"static const char *const {ident}_values[] = {{ {vals}, NULL }};")
            body = f"{{ .type = VALIDATE_ENUM, .enum_values = {ident}_values }}"
        elif kind == "array":
            items = self.ref(sh[1])
            ident = "node_array_of_" + items.lstrip("&").removeprefix("schema_").removeprefix("node_")
            body = f"{{ .type = VALIDATE_ARRAY, .items = {items} }}"
        elif kind == "map":
            items = self.ref(sh[1])
            ident = "node_map_of_" + items.lstrip("&").removeprefix("schema_").removeprefix("node_")
            body = f"{{ .type = VALIDATE_MAP, .items = {items} }}"
        else:
            raise SchemaError(f"cannot emit {kind}")
        base, n = ident, 2
        while ident in self.inline.values():
            ident, n = f"{base}_{n}", n + 1
        self.inline[sh] = ident
        self.defs.append(f"static const ValidateSchema {ident} = {body};")
        return "&" + ident


def emit(named, ops, sources):
    em = Emitter()
    objects = []
    for name, sh in named.items():
        members = []
        for mname, req, msh in sh[1]:
            members.append((mname, req, em.ref(msh)))
        objects.append((name, members))

    out = []
    w = out.append
    w("/* SPDX-License-Identifier: Apache-2.0 */")
    w("/*")
    w(" * GENERATED by tools/gen-validate-schema.py from Visier's OpenAPI definitions; do not edit.")
    w(" * Regenerate from the top of the source tree when the definitions change:")
    w(" *")
    w(" *   tools/gen-validate-schema.py ../shared/visier-api/administration-apis.yaml \\")
    w(" *           ../shared/visier-api/visier-subset.yaml > src/visierd/validate-schema.h")
    w(" *")
    w(" * Every member of the request-body schemas of the six permission writes, recursively, with")
    w(" * its JSON type and, for enums, the allowed values. Included by validate.c only; the types")
    w(" * are in validate.h. tests/check-validate-schema.sh fails when this file and the")
    w(" * definitions disagree.")
    w(" *")
    w(" * Sources:")
    for s in sources:
        w(f" *   {s}")
    w(" */")
    w("#pragma once")
    w("")
    w("#include <stdint.h>")
    w("")
    w('#include "validate.h"')
    w("")
    w("/* Named schemas (forward declarations: DTOs may refer to each other in any order). */")
    for name, _ in objects:
        w(f"static const ValidateSchema {c_ident(name)};")
    w("")
    w("/* Unnamed nodes: primitives, enums, arrays. */")
    out.extend(em.defs)
    for name, members in objects:
        w("")
        w(f"/* {name} */")
        w(f"static const ValidateMember {c_ident(name)}_members[] = {{")
        for mname, req, ref in members:
            w(f"        {{ {c_string(mname)}, {ref}, {'true' if req else 'false'} }},")
        w("        {},")
        w("};")
        w(f"static const ValidateSchema {c_ident(name)} = {{")
        w(f"        .type = VALIDATE_OBJECT,")
        w(f"        .name = {c_string(name)},")
        w(f"        .members = {c_ident(name)}_members,")
        w("};")
    w("")
    w("/* The request body of each write, found from its method and path under `paths:`. */")
    w("static const ValidateSchema *const validate_request_schemas[_JOB_OP_MAX] = {")
    for opname, method, path, schema in ops:
        w(f"        [{opname}] = &{c_ident(schema)}, /* {method.upper()} {path} */")
    w("};")
    return "\n".join(out) + "\n"


def main(argv):
    check = None
    args = argv[1:]
    if len(args) >= 2 and args[0] == "--check":
        check, args = args[1], args[2:]
    if not args:
        sys.stderr.write("usage: gen-validate-schema.py [--check FILE] PRIMARY.yaml [CROSS-CHECK.yaml...]\n")
        return 2
    docs = []
    for path in args:
        with open(path, encoding="utf-8") as f:
            try:
                docs.append((path, yaml_load(f.read())))
            except YamlError as e:
                sys.stderr.write(f"{path}: {e}\n")
                return 1
    try:
        primary_path, primary = docs[0]
        ops = []
        for opname, method, path in OPERATIONS:
            s = request_schema(primary, method, path)
            if s is None:
                raise SchemaError(f"{primary_path}: {method.upper()} {path} is not defined")
            ops.append((opname, method, path, s))
        named = collect(primary, [o[3] for o in ops], primary_path)
        for path, doc in docs[1:]:
            for opname, method, p in OPERATIONS:
                s = request_schema(doc, method, p)
                want = next(o[3] for o in ops if o[0] == opname)
                if s is not None and s != want:
                    raise SchemaError(f"{path}: {method.upper()} {p} takes {s}, {primary_path} says {want}")
            schemas = doc.get("components", {}).get("schemas", {})
            for name, sh in named.items():
                if name in schemas and shape(schemas[name], name, []) != sh:
                    raise SchemaError(f"{path}: schema {name} differs from {primary_path}")
    except SchemaError as e:
        sys.stderr.write(f"gen-validate-schema: {e}\n")
        return 1
    sources = []
    for p, doc in docs:
        info = doc.get("info") or {}
        sources.append(f"{p.split('/')[-1]} ({info.get('title', 'untitled')}, version {info.get('version', '?')})")
    text = emit(named, ops, sources)
    if check:
        with open(check, encoding="utf-8") as f:
            have = f.read()
        if have != text:
            sys.stderr.write(f"{check} does not match the definitions; regenerate it (see its top)\n")
            return 1
        return 0
    sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))

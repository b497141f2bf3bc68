#!/usr/bin/env python3
# SPDX-License-Identifier: Apache-2.0
"""Generate src/visierd/policy-table.h, the policy table: every operation of Visier's
published API (the *-apis.yaml definitions) with the class that decides what visierd does
with it, and the request headers Visier defines for it.

Classes (src/visierd/policy.h):
  local       answered by visierd itself (sign-in);
  read        proxied (GETs, and the POSTs that only read: data queries, searches,
              validations);
  publish     a write that changes versioned artifacts and so publishes a production
              version (every write that takes NonVersioned or ProjectID, production versions,
              profile assignments, commitAndPublish): through the publisher's one lane;
  write       any other write (users, drafts, alerts, reports, ...): through the lane too;
  denied      refused by default: anything that could reveal or change visierd's own
              credentials or keys (sign-in flows other than visierd's own, impersonation,
              OAuth user info, encryption keys, export-connector credentials).

The rules below decide; REVIEWED lists the operations whose class was checked by hand
against their description, with the reason. Run from the top of the source tree when
Visier's definitions change:

    tools/gen-policy.py ../shared/visier-api/{administration,analytic-model,authentication,data-out}-apis.yaml \\
        > src/visierd/policy-table.h

With --check FILE it writes nothing and exits 1 when FILE differs (tests/check-policy.sh).

docs/openapi.yaml is built from the same table: its hand-written part describes the routes
visierd serves with handlers of its own, and the block between the BEGIN and END markers at
the end of its paths lists every other operation of the table, with its class. To rewrite
that block in place, or to check it (exit 1 when it differs):

    tools/gen-policy.py --openapi docs/openapi.yaml DEFINITIONS.yaml...
    tools/gen-policy.py --check-openapi docs/openapi.yaml DEFINITIONS.yaml...

Standard library only: the YAML reader is the one tools/gen-validate-schema.py has.
"""

import importlib.util
import json
import os
import re
import sys

here = os.path.dirname(os.path.abspath(__file__))
spec = importlib.util.spec_from_file_location("genvs", os.path.join(here, "gen-validate-schema.py"))
genvs = importlib.util.module_from_spec(spec)
spec.loader.exec_module(genvs)

METHODS = ("get", "post", "put", "patch", "delete")

# The request headers Visier defines, in the order of PolicyHeader (src/visierd/policy.h).
HEADERS = ("TargetTenantID", "ProjectID", "NonVersioned", "DataVersionID", "FastMode",
           "SessionBasedPermissions", "SessionRepoId", "Prefer", "TargetUsername")
HEADER_BITS = {h: "PH_" + re.sub(r"(?<!^)(?=[A-Z])", "_", h).upper().replace("I_D", "ID") for h in HEADERS}

LOCAL = {("POST", "/v1/admin/visierSecureToken"), ("POST", "/v1/auth/oauth2/token")}

# Checked by hand: (method, path) -> (class, why).
REVIEWED = {
    ("POST", "/v1/admin/visierImpersonationToken"): ("denied", "mints a token as another user"),
    ("GET", "/v1/auth/oauth2/authorize"): ("denied", "an OAuth flow for Visier's own sign-in"),
    ("GET", "/v1/auth/oauth2/userinfo"): ("denied", "reveals visierd's own API user"),
    ("POST", "/v1alpha/search/visier-objects"): ("read", "a search"),
    ("POST", "/v1/data/model/analytic-objects/{objectId}/dimensions/{dimensionId}/mappings/validate"):
        ("read", "validates mappings, changes nothing"),
    ("POST", "/v1/admin/production-versions"): ("publish", "production version operations"),
    ("POST", "/v1/admin/production-versions/{productionVersionId}"): ("publish", "production version operations"),
    ("PUT", "/v1/admin/profiles/accessible-tenants/{profileId}/assign"): ("publish", "profile assignment"),
    ("DELETE", "/v1/admin/profiles/accessible-tenants/{profileId}/remove"): ("publish", "profile assignment"),
    ("PUT", "/v1/admin/profiles/{profileId}/assign"): ("publish", "profile assignment"),
    ("DELETE", "/v1/admin/profiles/{profileId}/remove"): ("publish", "profile assignment"),
    ("POST", "/v1/admin/projects/{projectId}"): ("publish", "project operations, commitAndPublish among them"),
    ("POST", "/v1/admin/security-artifacts/sync-to-non-versioned"): ("publish", "copies versioned artifacts"),
}


def denied_by_path(path):
    return ("encryption-keys" in path or "/export-connectors/credentials" in path)


def classify(method, path, headers):
    key = (method, path)
    if key in LOCAL:
        return "local"
    if key in REVIEWED:
        return REVIEWED[key][0]
    if path.startswith("/v1/auth/") or path.startswith("/v1/admin/visier"):
        return "denied"
    if denied_by_path(path):
        return "denied"
    if method == "GET":
        return "read"
    if method == "POST" and path.startswith("/v1/data/query/"):
        return "read"
    if "NonVersioned" in headers or "ProjectID" in headers or path.endswith("/revert-to-parent"):
        return "publish"
    return "write"


def operations(docs):
    ops = {}
    for src, doc in docs:
        comps = (doc.get("components") or {}).get("parameters") or {}
        for path, item in (doc.get("paths") or {}).items():
            common = item.get("parameters") or []
            for m in METHODS:
                op = item.get(m)
                if op is None:
                    continue
                hs = []
                for p in (op.get("parameters") or []) + common:
                    if "$ref" in p:
                        p = comps.get(p["$ref"].split("/")[-1], {})
                    if p.get("in") == "header" and p.get("name") in HEADERS and p["name"] not in hs:
                        hs.append(p["name"])
                key = (m.upper(), path)
                if key in ops:
                    raise SystemExit(f"{src}: {m.upper()} {path} is defined twice")
                ops[key] = (os.path.basename(src), hs, op.get("operationId", ""), op.get("summary", ""))
    return ops


def pattern(path):
    return re.sub(r"\{[^}]+\}", "*", path)


def emit(ops):
    out = []
    out.append("/* SPDX-License-Identifier: Apache-2.0 */")
    out.append("/* Generated by tools/gen-policy.py from Visier's definitions: do not edit. Every operation")
    out.append(" * of the published API, with its class and the request headers Visier defines for it;")
    out.append(" * patterns with fewer wildcards first, so that a literal segment wins over a parameter. */")
    out.append("#pragma once")
    out.append("")
    out.append('#include "policy.h"')
    out.append("")
    out.append("static const PolicyRow policy_rows[] = {")
    rows = sorted(ops.items(), key=lambda kv: (pattern(kv[0][1]).count("*"), kv[0][1], METHODS.index(kv[0][0].lower())))
    for (method, path), (src, hs, opid, _) in rows:
        cls = classify(method, path, hs)
        mask = " | ".join(HEADER_BITS[h] for h in HEADERS if h in hs) or "0"
        out.append(f'        {{ "{method}", "{pattern(path)}", POLICY_{cls.upper()}, {mask} }}, /* {opid} */')
    out.append("};")
    return "\n".join(out) + "\n"


OPENAPI_BEGIN = "  # BEGIN generated by tools/gen-policy.py from the policy table: do not edit by hand"
OPENAPI_END = "  # END generated by tools/gen-policy.py"

# What each class's operations answer, in docs/openapi.yaml.
OPENAPI_CLASS = {
    "read": ("Proxied to Visier as it is (a read).",
             [("'200'", "VisierAnswer"), ("'401'", "Unauthorized"), ("'403'", "Forbidden"),
              ("'502'", "BadGateway"), ("default", "VisierError")]),
    "publish": ("A publishing write: queued as a call job and sent alone through the publisher's "
                "one lane (never beside another write); answered with Visier's own answer once the "
                "job ended, or 202 with the job (docs/jobs.md, call jobs).",
                [("'200'", "CallDone"), ("'202'", "JobAccepted"), ("'401'", "Unauthorized"),
                 ("'403'", "Forbidden"), ("'413'", "PayloadTooLarge"), ("'503'", "NotQueued"),
                 ("default", "VisierError")]),
    "write": ("A write that publishes no production version: queued as a call job and sent alone "
              "through the publisher's lane like a publishing write; answered with Visier's own "
              "answer once the job ended, or 202 with the job (docs/jobs.md, call jobs).",
              [("'200'", "CallDone"), ("'202'", "JobAccepted"), ("'401'", "Unauthorized"),
               ("'403'", "Forbidden"), ("'413'", "PayloadTooLarge"), ("'503'", "NotQueued"),
               ("default", "VisierError")]),
    "denied": ("Denied by default: it could reveal or change visierd's own credentials or keys. "
               "Refused with 403 without reaching Visier, unless `[policy] allow` names it (then "
               "a GET is proxied as a read, anything else is a call job for the admin role).",
               [("'403'", "Forbidden")]),
}


def openapi_split(text):
    """The hand-written text before and after the generated block, and the (METHOD, pattern)
    pairs and paths the hand-written part describes."""
    lines = text.split("\n")
    if OPENAPI_BEGIN in lines and OPENAPI_END in lines:
        b, e = lines.index(OPENAPI_BEGIN), lines.index(OPENAPI_END)
        if e < b:
            raise SystemExit("docs/openapi.yaml: END marker before BEGIN")
        head, tail = lines[:b], lines[e + 1:]
    else:
        try:
            c = lines.index("components:")
        except ValueError:
            raise SystemExit("docs/openapi.yaml: no components: line to put the generated block before")
        head, tail = lines[:c], lines[c:]
    hand, paths, cur, in_paths = set(), set(), None, False
    for line in head + tail:
        if line and line[0] not in " #":
            in_paths = line.startswith("paths:")
            continue
        m = re.match(r"^  (/\S*):$", line)
        if in_paths and m:
            cur = m.group(1)
            paths.add(pattern(cur))
            continue
        m = re.match(r"^    (get|post|put|patch|delete):$", line)
        if in_paths and m and cur:
            hand.add((m.group(1).upper(), pattern(cur)))
    return head, tail, hand, paths


def emit_openapi(ops, text):
    head, tail, hand, hand_paths = openapi_split(text)
    by_path = {}
    for (method, path), v in ops.items():
        if (method, pattern(path)) in hand:
            continue
        if pattern(path) in hand_paths:
            raise SystemExit(f"{method} {path}: its path is hand-written in docs/openapi.yaml; "
                             "describe this operation there too")
        by_path.setdefault(path, []).append((method, v))
    out = [OPENAPI_BEGIN]
    for path in sorted(by_path, key=lambda p: (pattern(p), p)):
        out.append(f"  {path}:")
        params = re.findall(r"\{([^}]+)\}", path)
        for method, (src, hs, opid, summary) in sorted(by_path[path], key=lambda mv: METHODS.index(mv[0].lower())):
            cls = classify(method, path, hs)
            what, responses = OPENAPI_CLASS[cls]
            # A denied operation an operator allows: a GET is a read, anything else needs admin.
            role = {"read": "read", "publish": "write", "write": "write",
                    "denied": "read" if method == "GET" else "admin"}[cls]
            out.append(f"    {method.lower()}:")
            out.append("      tags: [visier operations]")
            out.append(f"      operationId: {opid}")
            if summary:
                out.append(f"      summary: {json.dumps(summary)}")
            out.append(f"      description: {json.dumps(what + f' Visier defines it in `{src}`, operation `{opid}`.')}")
            out.append(f"      x-visierd-policy: {cls}")
            out.append(f"      x-visierd-role: {role}")
            if params or hs:
                out.append("      parameters:")
                for name in params:
                    out.append(f"        - {{name: {name}, in: path, required: true, schema: {{type: string}}}}")
                for h in hs:
                    out.append(f"        - {{name: {h}, in: header, required: false, schema: {{type: string}}}}")
            out.append("      responses:")
            for code, ref in responses:
                out.append(f"        {code}:")
                out.append(f"          $ref: '#/components/responses/{ref}'")
    out.append(OPENAPI_END)
    return "\n".join(head + out + tail)


def load_docs(args):
    docs = []
    for path in args:
        with open(path, encoding="utf-8") as f:
            docs.append((path, genvs.yaml_load(f.read())))
    return docs


def main(argv):
    check = openapi = check_openapi = None
    args = argv[1:]
    while len(args) >= 2 and args[0] in ("--check", "--openapi", "--check-openapi"):
        if args[0] == "--check":
            check = args[1]
        elif args[0] == "--openapi":
            openapi = args[1]
        else:
            check_openapi = args[1]
        args = args[2:]
    if not args:
        sys.stderr.write("usage: gen-policy.py [--check FILE] [--openapi|--check-openapi OPENAPI.yaml] "
                         "DEFINITIONS.yaml...\n")
        return 2
    ops = operations(load_docs(args))
    status = 0
    for doc in (openapi, check_openapi):
        if not doc:
            continue
        with open(doc, encoding="utf-8") as f:
            old = f.read()
        new = emit_openapi(ops, old)
        if doc == openapi and new != old:
            with open(doc + ".tmp", "w", encoding="utf-8") as f:
                f.write(new)
            os.replace(doc + ".tmp", doc)
        elif doc == check_openapi and new != old:
            sys.stderr.write(f"{doc}: the generated block differs from what the policy table gives\n")
            status = 1
    text = emit(ops)
    if check:
        with open(check, encoding="utf-8") as f:
            if f.read() != text:
                sys.stderr.write(f"{check} differs from what the definitions give\n")
                status = 1
        return status
    if not openapi and not check_openapi:
        sys.stdout.write(text)
    return status


if __name__ == "__main__":
    sys.exit(main(sys.argv))

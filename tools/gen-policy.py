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
Standard library only: the YAML reader is the one tools/gen-validate-schema.py has.
"""

import importlib.util
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
                ops[key] = (os.path.basename(src), hs, op.get("operationId", ""))
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
    for (method, path), (src, hs, opid) in rows:
        cls = classify(method, path, hs)
        mask = " | ".join(HEADER_BITS[h] for h in HEADERS if h in hs) or "0"
        out.append(f'        {{ "{method}", "{pattern(path)}", POLICY_{cls.upper()}, {mask} }}, /* {opid} */')
    out.append("};")
    return "\n".join(out) + "\n"


def main(argv):
    check = None
    args = argv[1:]
    if len(args) >= 2 and args[0] == "--check":
        check, args = args[1], args[2:]
    if not args:
        sys.stderr.write("usage: gen-policy.py [--check FILE] DEFINITIONS.yaml...\n")
        return 2
    docs = []
    for path in args:
        with open(path, encoding="utf-8") as f:
            docs.append((path, genvs.yaml_load(f.read())))
    text = emit(operations(docs))
    if check:
        with open(check, encoding="utf-8") as f:
            if f.read() != text:
                sys.stderr.write(f"{check} differs from what the definitions give\n")
                return 1
        return 0
    sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))

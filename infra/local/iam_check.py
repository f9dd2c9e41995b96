#!/usr/bin/env python3
"""IAM proven, not assumed: evaluates what the deployer and its instances do against the IAM
policies of infra/template.yaml, with a real policy engine (@cloud-copilot/iam-simulate, run by
iam_simulate.mjs; conditions, boundaries and explicit denies are evaluated).

    python infra/local/iam_check.py CALLS.jsonl [--template infra/template.yaml] [--json OUT]

CALLS.jsonl is what iam_record.py wrote during the end-to-end tests. Checked:

* every recorded call of each Lambda, as each of the IAM authorizations it needs, against that
  function's role in the template (the function is named in the User-Agent; its template
  resource is the one whose FunctionName resolves to that name, its role the one it names);
* what Lambda itself does with the function's role: create and write its log streams in the
  function's LoggingConfig group;
* every instance's own calls (download its bundle version, write its log streams, tag itself
  with its bootstrap's report, read its secrets), taken from the user data provision put in its
  launch template, against the inline and managed policies provision gave its role, under the
  template's permissions boundary: as deployed (the default InstanceBoundaryAllowedActions) and
  sandboxed (the list the parameter's description gives).

A denied call fails (exit 1) with the statement that denied it or the one to add; an unmapped
call fails; a context key the engine ignores fails (a typo would silently weaken a check). The
report ends with the least-privilege list: per role, the actions its Allow statements grant that
no call used.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shlex
import subprocess
import sys
import time
from typing import Any

import iam_record
from template import ACCOUNT, REGION, ROOT, TEMPLATE, Template, load_template

HERE = os.path.dirname(os.path.abspath(__file__))
# What InstanceBoundaryAllowedActions lists to sandbox instances (its description in the
# template, plus kms:Decrypt for secrets under a customer managed key).
SANDBOX_ALLOWED = ["s3:GetObject", "s3:GetObjectVersion", "logs:CreateLogStream", "logs:GetLogEvents",
                   "logs:PutLogEvents",
                   "ec2:CreateTags", "ssm:*", "ssmmessages:*", "ec2messages:*", "kms:Decrypt"]
# How the recorder names an instance's own call (real guests): INSTANCE + its id.
INSTANCE = "instance:"
# Callers that are no function of the template: the operator's CLI runs with the operator's
# own credentials (what they need is the README's business, not the deployer's roles).
OPERATOR_APPS = {"stackdrop-cli"}
# Buckets only the tests use: tests/e2e/test_pipeline.py invokes the steps directly on a bucket
# the trigger does not watch (so no execution runs beside it). In AWS the functions may read
# only the template's BundleBucket, so a plain input naming another bucket is denied there: its
# calls are counted, not checked.
TEST_ONLY_BUCKETS = {"stackdrop-direct"}


# --------------------------------------------------------------------------------------------
# What is simulated
# --------------------------------------------------------------------------------------------


def user_data_vars(text: str) -> dict[str, str]:
    """The SD_* assignments at the top of stackdrop's user data (single-quoted shell words)."""
    head = text.split("\nSD_BOOTSTRAP_GZ=", 1)[0]
    out = {}
    for word in shlex.split(head, comments=True, posix=True):
        name, eq, value = word.partition("=")
        if eq and re.fullmatch(r"SD_[A-Z0-9_]+", name):
            out[name] = value
    return out


def secret_parameter_arn(reference: str) -> str:
    """The parameter ARN of a secret's reference (name, /path/name or ARN, with an optional
    :version or :label selector), as functions/core/src/secrets.rs parameter_arn."""
    name = iam_record.secret_name(reference)
    return name if name.startswith("arn:") else f"arn:aws:ssm:{REGION}:{ACCOUNT}:parameter/{name.lstrip('/')}"


def unmapped(rec: dict[str, Any]) -> str:
    return (f"{rec['function']}: {rec['service']} {rec['operation']} is not mapped to IAM actions "
            f"({rec.get('detail')}): add it to infra/local/iam_record.py")


class Check:
    def __init__(self, records: list[dict[str, Any]], template: Template,
                 sandbox: Template | None = None):
        self.records = records
        self.t = template
        self.sandbox = sandbox
        self.jobs: list[dict[str, Any]] = []
        self.meta: list[dict[str, Any]] = []  # per job: who, what, why
        self.problems: list[str] = []
        self.skipped: dict[str, int] = {}
        self.guest_calls = 0
        self._instance_seen: set[str] = set()  # (role, auth) of the instance calls added

    def add(self, who: str, role: str, policies: list[dict], boundary: list[dict] | None,
            auth: dict[str, Any], why: str) -> None:
        self.jobs.append({
            "id": len(self.jobs),
            "identityPolicies": ownerless(policies),
            "permissionBoundaryPolicies": ownerless(boundary or []),
            "request": {"principal": f"arn:aws:iam::{ACCOUNT}:role/{role}", "action": auth["action"],
                        "resource": {"resource": ownerless(auth["resource"]), "accountId": ACCOUNT},
                        "contextVariables": auth.get("context") or {}},
        })
        self.meta.append({"who": who, "role": role, "auth": auth, "why": why})

    def build(self) -> None:
        functions = self.t.functions()
        unique: set[str] = set()
        for rec in self.records:
            why = self.skip(rec)
            if why:
                self.skipped[why] = self.skipped.get(why, 0) + 1
                continue
            if rec["function"].startswith(INSTANCE):
                continue  # an instance's own call (real guests): checked with its role, below
            if rec.get("unmapped"):
                self.problems.append(unmapped(rec))
                continue
            fn = functions.get(rec["function"])
            if fn is None:
                self.problems.append(f"{rec['function']}: called {rec['service']} {rec['operation']} but is no "
                                     "function of the template")
                continue
            wrong = self.wrong_principal(rec, fn["role"])
            if wrong:
                self.problems.append(wrong)
            for auth in rec["auth"]:
                key = json.dumps([rec["function"], auth], sort_keys=True)
                if key in unique:
                    continue
                unique.add(key)
                self.add(rec["function"], fn["role"], self.t.role_policies(fn["role"]), None, auth,
                         f"{rec['service']} {rec['operation']}")
        for name, fn in functions.items():
            group = f"arn:aws:logs:{REGION}:{ACCOUNT}:log-group:{fn['log_group']}"
            stream = f"{group}:log-stream:2026/01/01/[$LATEST]0123456789abcdef0123456789abcdef"
            for action in ("logs:CreateLogStream", "logs:PutLogEvents"):
                self.add(name, fn["role"], self.t.role_policies(fn["role"]), None,
                         {"action": action, "resource": stream, "context": {}},
                         "Lambda writes the function's logs")
        self.instances()
        self.services()

    def services(self) -> None:
        """The state machines' and rules' roles, and the role each recorded schedule is given."""
        try:
            calls = self.t.service_calls()
        except ValueError as e:
            self.problems.append(str(e))
            calls = []
        for rec in self.records:
            f = rec.get("facts") or {}
            if rec["operation"] in ("CreateSchedule", "UpdateSchedule") and f.get("role"):
                role = self.t.role_of_arn(f["role"])
                if role is None:
                    self.problems.append(f"{rec['function']}: a schedule runs as {f['role']}, no role of the template")
                    continue
                calls.append((role, {"action": "states:StartExecution", "resource": f["target"], "context": {}},
                              "EventBridge Scheduler starts the schedule's target"))
        seen: set[str] = set()
        for role, auth, why in calls:
            key = json.dumps([role, auth], sort_keys=True)
            if key not in seen:
                seen.add(key)
                self.add(f"service ({why})", role, self.t.role_policies(role), None, auth, why)

    def wrong_principal(self, rec: dict[str, Any], role: str) -> str | None:
        """A call signed as another role than the function's in the template (the local
        environment runs each function with its template role's credentials)."""
        got = rec.get("principal")
        if not got:
            return None
        want = self.t.r.physical(role)
        m = ASSUMED_ROLE.match(got)
        if m and m.group(1) == want:
            return None
        return f"{rec['function']}: called {rec['service']} {rec['operation']} as {got}, not as its " \
               f"template role {want} ({role})"

    @staticmethod
    def skip(rec: dict[str, Any]) -> str | None:
        if rec["function"] in OPERATOR_APPS:
            return f"{rec['function']} (the operator's own credentials)"
        buckets = {a["resource"].split(":::", 1)[1].split("/", 1)[0] for a in rec.get("auth", [])
                   if a["resource"].startswith("arn:aws:s3:::")}
        if buckets & TEST_ONLY_BUCKETS:
            return f"a test-only bucket ({', '.join(sorted(buckets & TEST_ONLY_BUCKETS))})"
        return None

    def provisioned(self) -> dict[str, Any]:
        """What provision's successful calls made for instances: roles (as created), their inline
        and managed policies, profiles' roles, launch templates with user data, the instances
        launched from each template."""
        made: dict[str, Any] = {"roles": {}, "inline": {}, "managed": {}, "profiles": {}, "launched": {},
                                "templates": []}
        for rec in self.records:
            f, op = rec.get("facts") or {}, rec["operation"]
            if rec.get("status", 500) >= 300:
                continue
            if op == "CreateRole":
                made["roles"][f["role"]] = f
            elif op == "PutRolePolicy":
                made["inline"].setdefault(f["role"], {})[f["policy_name"]] = f["policy"]
            elif op == "AttachRolePolicy":
                made["managed"].setdefault(f["role"], {})[f["policy_arn"]] = f["policy"]
            elif op == "AddRoleToInstanceProfile":
                made["profiles"][f["profile"]] = f["role"]
            elif op in ("CreateLaunchTemplate", "CreateLaunchTemplateVersion") and f.get("user_data"):
                made["templates"].append(f)
            elif op == "RunInstances":
                made["launched"].setdefault(f["launch_template_id"], []).extend(f["instances"])
        return made

    def instances(self) -> None:
        """Each launch template's instance, its own calls, under the role provision made."""
        made = self.provisioned()
        boundary_arn = self.t.r.ref("InstanceBoundary")
        of_instance: dict[str, tuple[str, list[dict], dict[str, Any], set[str]]] = {}
        for lt in made["templates"]:
            role = made["profiles"].get(lt["profile"], lt["profile"])
            if role not in made["inline"]:
                self.problems.append(f"instance of {lt['launch_template_id']}: no policy recorded for its role {role}")
                continue
            created = made["roles"].get(role)
            if created and created.get("boundary") != boundary_arn:
                self.problems.append(f"instance role {role} was created with boundary {created.get('boundary')}, "
                                     f"not the template's InstanceBoundary ({boundary_arn})")
            policies = [{"name": f"{role}/{n}", "policy": p} for n, p in sorted(made["inline"][role].items())]
            policies += [{"name": arn, "policy": p} for arn, p in sorted(made["managed"].get(role, {}).items()) if p]
            v = user_data_vars(lt["user_data"])
            for iid in made["launched"].get(lt["launch_template_id"]) or ["i-0123456789abcdef0"]:
                expected = self.expected(iid, lt, v)
                for auth, why in expected:
                    self.add_instance(iid, lt, role, policies, auth, why)
                of_instance[iid] = (role, policies, lt, {a["action"] for a, _ in expected})
        self.guests(of_instance)

    def add_instance(self, iid: str, lt: dict[str, Any], role: str, policies: list[dict],
                     auth: dict[str, Any], why: str) -> None:
        """One instance call, once per role, under the boundary as deployed and sandboxed."""
        key = json.dumps([role, auth], sort_keys=True)
        if key in self._instance_seen:
            return
        self._instance_seen.add(key)
        self.add(f"instance {iid} ({lt['instance_tags'].get('stackdrop:app')}/"
                 f"{lt['instance_tags'].get('stackdrop:instance')})", role, policies, [self.t.boundary()], auth, why)
        if self.sandbox is not None:
            self.add(f"instance {iid}, sandboxed", role, policies, [self.sandbox.boundary()], auth,
                     why + " (boundary sandboxed)")

    def guests(self, of_instance: dict[str, tuple[str, list[dict], dict[str, Any], set[str]]]) -> None:
        """What real guests did (with --guests): each call against its instance's role, and each
        must be one of the expected ones, or the expected list misses it."""
        for rec in self.records:
            if not rec["function"].startswith(INSTANCE):
                continue
            iid = rec["function"][len(INSTANCE):]
            if iid not in of_instance:
                self.problems.append(f"{rec['function']}: {rec['service']} {rec['operation']} from an instance "
                                     "no recorded launch template describes")
                continue
            if rec.get("unmapped"):
                self.problems.append(unmapped(rec))
                continue
            role, policies, lt, actions = of_instance[iid]
            for auth in rec["auth"]:
                if auth["action"] not in actions:
                    self.problems.append(f"{rec['function']} called {auth['action']} ({rec['operation']}), which "
                                         "its expected calls lack: add it to iam_check.Check.expected")
                self.add_instance(iid, lt, role, policies, auth, f"{rec['service']} {rec['operation']} (recorded on the guest)")
        self.guest_calls = sum(r["function"].startswith(INSTANCE) for r in self.records)

    @staticmethod
    def expected(iid: str, lt: dict[str, Any], v: dict[str, str]) -> list[tuple[dict[str, Any], str]]:
        out = []
        obj = f"arn:aws:s3:::{v['SD_BUCKET']}/{v['SD_KEY']}"
        if v.get("SD_VERSION"):
            out.append(({"action": "s3:GetObjectVersion", "resource": obj,
                         "context": {"s3:VersionId": v["SD_VERSION"]}}, "download its bundle version"))
        else:
            out.append(({"action": "s3:GetObject", "resource": obj, "context": {}}, "download its bundle"))
        group = f"arn:aws:logs:{REGION}:{ACCOUNT}:log-group:{v['SD_LOG_GROUP']}"
        for stream in ("bootstrap", "app"):
            for action in ("logs:CreateLogStream", "logs:PutLogEvents"):
                out.append(({"action": action, "resource": f"{group}:log-stream:{iid}/{stream}", "context": {}},
                            f"write its {stream} log stream"))
        # The shipper, restarted after a send it saw no answer to, asks whether the batch arrived.
        out.append(({"action": "logs:GetLogEvents", "resource": f"{group}:log-stream:{iid}/app", "context": {}},
                    "read back its app log stream"))
        tags = lt["instance_tags"]
        out.append(({"action": "ec2:CreateTags", "resource": f"arn:aws:ec2:{REGION}:{ACCOUNT}:instance/{iid}",
                     "context": {**iam_record.resource_tag_context(tags, ec2=True),
                                 **iam_record.tag_context({"stackdrop:bootstrap": "ok"})}},
                    "tag itself with its bootstrap's report"))
        for line in (v.get("SD_SECRETS") or "").splitlines():
            if "=" not in line:
                continue
            arn = secret_parameter_arn(line.split("=", 1)[1])
            out.append(({"action": "ssm:GetParameters", "resource": arn, "context": {}}, "read its secret"))
            # Not simulated: kms:Decrypt through SSM under a customer managed key. Its policy tests
            # kms:EncryptionContext:PARAMETER_ARN, and the engine (0.1.173) takes a context key
            # with a variable part only after a "/" (aws:RequestTag/K), so it ignores this one.
        return out


# AWS's public SSM parameters (/aws/service/...) have no account in their ARN
# (arn:aws:ssm:REGION::parameter/...), which the engine refuses as a parameter ARN: both the
# requests and the policies name that owner as this placeholder account instead.
OWNERLESS_SSM = re.compile(r"^(arn:[^:]*:ssm:[^:]*):(:parameter/)")
AWS_OWNER = "000000000000"


def ownerless(v: Any) -> Any:
    if isinstance(v, str):
        return OWNERLESS_SSM.sub(rf"\1:{AWS_OWNER}\2", v)
    if isinstance(v, list):
        return [ownerless(x) for x in v]
    if isinstance(v, dict):
        return {k: ownerless(x) for k, x in v.items()}
    return v


def simulate(jobs: list[dict[str, Any]], npm_prefix: str) -> list[dict[str, Any]]:
    p = subprocess.run(["node", os.path.join(HERE, "iam_simulate.mjs"), npm_prefix],
                       input=json.dumps(jobs), capture_output=True, text=True)
    if p.returncode != 0:
        raise RuntimeError(f"iam_simulate.mjs exited {p.returncode}: {p.stderr.strip()}")
    return json.loads(p.stdout)


def generalize(arn: str) -> str:
    """A resource for a suggested statement: the concrete ARN with its last id replaced by *."""
    m = re.match(r"^(arn:[^:]*:[^:]*:[^:]*:[^:]*:)(.*)$", arn)
    if not m:
        return arn
    head, rest = m.groups()
    if "/" in rest:
        return head + rest.rsplit("/", 1)[0] + "/*"
    return arn


PATHS = os.path.join(HERE, "iam_paths.json")
ASSUMED_ROLE = re.compile(r"arn:aws:sts::\d+:assumed-role/([^/]+)/")


def load_paths(path: str = PATHS) -> dict[str, dict[str, str]]:
    """Per role, actions allowed for a path an end-to-end run may not take, and why."""
    with open(path, encoding="utf-8") as f:
        return {k: v for k, v in json.load(f).items() if not k.startswith("_")}


def evaluate(check: Check, results: list[dict[str, Any]],
             paths: dict[str, dict[str, str]] | None = None) -> dict[str, Any]:
    paths = load_paths() if paths is None else paths
    denied, used = [], {}
    for meta, res in zip(check.meta, results):
        a = meta["auth"]
        if res["result"] == "Allowed" and not res.get("ignored"):
            for policy, sid in res["allowedBy"]:
                used.setdefault((meta["role"], policy, sid), set()).add(a["action"])
            continue
        entry = {"who": meta["who"], "role": meta["role"], "why": meta["why"], "action": a["action"],
                 "resource": a["resource"], "context": a.get("context") or {}, "result": res["result"]}
        if res.get("ignored"):
            entry["result"] = f"{res['result']}, but the engine ignored context keys {res['ignored']} (not "\
                              "applicable to the action: fix the recorder)"
        if res["result"] == "Error":
            entry["errors"] = res.get("errors")
        if res.get("deniedBy"):
            entry["denied_by"] = res["deniedBy"]
        if res.get("boundaryDeniedBy") or res.get("boundaryResult") not in (None, "Allowed"):
            entry["boundary"] = {"result": res.get("boundaryResult"), "denied_by": res.get("boundaryDeniedBy")}
        if res.get("nearMisses"):
            entry["near_misses"] = res["nearMisses"]
        if res["result"] == "ImplicitlyDenied" and res.get("boundaryResult") in (None, "Allowed"):
            entry["add"] = {"Effect": "Allow", "Action": a["action"], "Resource": generalize(a["resource"])}
        denied.append(entry)
    unused: dict[str, list[str]] = {}
    untaken: dict[str, list[str]] = {}  # unused, for a path named in iam_paths.json
    for fn in sorted({m["role"] for m in check.meta if not m["who"].startswith("instance")}):
        for pol in check.t.role_policies(fn):
            for st in pol["policy"]["Statement"]:
                if st.get("Effect") != "Allow":
                    continue
                actions = st["Action"] if isinstance(st["Action"], list) else [st["Action"]]
                got = used.get((fn, pol["name"], st.get("Sid")), set())
                for action in actions:
                    if action in got:
                        continue
                    why = paths.get(fn, {}).get(action)
                    (untaken if why else unused).setdefault(fn, []).append(
                        f"{action} ({st.get('Sid')})" + (f": {why}" if why else ""))
    return {"denied": denied, "problems": check.problems, "unused": unused, "untaken": untaken,
            "skipped": check.skipped}


def report(out: dict[str, Any], n_records: int, n_jobs: int, seconds: float) -> str:
    guests = out.get("figures", {}).get("guest_calls", 0)
    lines = [f"iam-check: {n_records} recorded calls ({guests} of them by real guests), {n_jobs} distinct "
             f"authorizations simulated in {seconds:.2f}s"]
    for why, n in sorted(out.get("skipped", {}).items()):
        lines.append(f"not checked: {n} calls of {why}")
    counts: dict[str, int] = {}
    for p in out["problems"]:
        counts[p] = counts.get(p, 0) + 1
    for p, n in counts.items():
        lines.append(f"FAIL {p}" + (f" ({n} times)" if n > 1 else ""))
    alike: dict[tuple, list[dict[str, Any]]] = {}  # one denial shown per kind, with its count
    for d in out["denied"]:
        kind = "instance" if d["who"].startswith("instance") else d["who"]
        role = "instance role" if kind == "instance" else d["role"]
        alike.setdefault((kind, role, d["action"], generalize(d["resource"]), d["why"], d["result"]), []).append(d)
    for group in alike.values():
        d = group[0]
        more = f" (and {len(group) - 1} more like it)" if len(group) > 1 else ""
        lines.append(f"DENIED {d['who']} (role {d['role']}): {d['action']} on {d['resource']} [{d['why']}]: "
                     f"{d['result']}{more}")
        if d["context"]:
            lines.append(f"    context: {json.dumps(d['context'], sort_keys=True)}")
        for k in ("errors", "denied_by", "boundary", "near_misses"):
            if k in d:
                lines.append(f"    {k.replace('_', ' ')}: {json.dumps(d[k])}")
        if "add" in d:
            lines.append(f"    statement to add to {d['role']}: {json.dumps(d['add'])}")
    lines.append("least privilege: actions allowed that no call used (remove them, or name the path "
                 "that needs them in infra/local/iam_paths.json)")
    for role, actions in sorted(out["unused"].items()):
        lines.append(f"    {role}: {', '.join(actions)}")
    if not out["unused"]:
        lines.append("    none")
    if out.get("untaken"):
        lines.append("allowed for a path this run did not take (infra/local/iam_paths.json):")
        for role, actions in sorted(out["untaken"].items()):
            lines.extend(f"    {role}: {a}" for a in actions)
    lines.append("iam-check: " + ("FAILED" if out["denied"] or out["problems"] else "every call allowed"))
    return "\n".join(lines)


def run(records: list[dict[str, Any]], template_path: str = TEMPLATE, npm_prefix: str | None = None,
        doc: dict[str, Any] | None = None) -> tuple[dict[str, Any], str]:
    npm_prefix = npm_prefix or os.environ.get("NPM_PREFIX") or os.path.join(ROOT, ".tools", "npm")
    doc = doc if doc is not None else load_template(template_path)
    check = Check(records, Template(doc=doc),
                  Template(doc=doc, parameters={"InstanceBoundaryAllowedActions": SANDBOX_ALLOWED}))
    check.build()
    t0 = time.monotonic()
    results = simulate(check.jobs, npm_prefix) if check.jobs else []
    seconds = time.monotonic() - t0
    out = evaluate(check, results)
    out["figures"] = {"records": len(records), "guest_calls": check.guest_calls, "simulations": len(check.jobs),
                      "seconds": round(seconds, 3)}
    return out, report(out, len(records), len(check.jobs), seconds)


def read_records(path: str) -> list[dict[str, Any]]:
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("calls", help="the JSONL iam_record.py wrote")
    p.add_argument("--template", default=TEMPLATE)
    p.add_argument("--npm-prefix", default=None, help="where @cloud-copilot/iam-simulate is installed (.tools/npm)")
    p.add_argument("--json", default=None, help="also write the result here")
    p.add_argument("--expect-guest-calls", action="store_true",
                   help="fail unless real guests' own calls were recorded (the run had guests)")
    a = p.parse_args(argv)
    records = read_records(a.calls)
    if not records:
        print(f"iam-check: {a.calls} holds no calls: was the e2e run recorded (STACKDROP_RECORD_CALLS)?")
        return 1
    out, text = run(records, a.template, a.npm_prefix)
    if a.expect_guest_calls and not out["figures"]["guest_calls"]:
        out["problems"].append("no call of a real guest was recorded, though the run had guests")
        text += "\nFAIL no call of a real guest was recorded, though the run had guests"
    print(text)
    if a.json:
        with open(a.json, "w", encoding="utf-8") as f:
            json.dump(out, f, indent=1, sort_keys=True)
    return 1 if out["denied"] or out["problems"] else 0


if __name__ == "__main__":
    sys.exit(main())

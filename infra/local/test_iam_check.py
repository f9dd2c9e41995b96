"""iam_check.py: the template resolved with the local names, and the IAM simulation proving it
can fail: a policy with one statement removed is denied, with the statement to add.

testdata/iam_calls.jsonl is a slice of a real recording (iam_record.py during the e2e tests):
one deploy of examples/hello (validate, provision, launch, finish) and a teardown's calls.
Needs node and `make tools` (.tools/npm).
"""

import copy
import json
import os
import shutil
import sys

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import iam_check  # noqa: E402
import template as tpl  # noqa: E402

NPM = os.path.join(iam_check.ROOT, ".tools", "npm")
needs_engine = pytest.mark.skipif(
    shutil.which("node") is None or not os.path.isdir(os.path.join(NPM, "node_modules", "@cloud-copilot", "iam-simulate")),
    reason="needs node and `make tools` (@cloud-copilot/iam-simulate in .tools/npm)")
CALLS = iam_check.read_records(os.path.join(HERE, "testdata", "iam_calls.jsonl"))


def template():
    return tpl.load_template()


def without(doc, resource, sid):
    """The template with one statement (by Sid) removed from a role's policy or the boundary."""
    doc = copy.deepcopy(doc)
    props = doc["Resources"][resource]["Properties"]
    docs = [props["PolicyDocument"]] if "PolicyDocument" in props else [p["PolicyDocument"] for p in props["Policies"]]
    before = sum(len(d["Statement"]) for d in docs)
    for d in docs:
        d["Statement"] = [s for s in d["Statement"] if not (isinstance(s, dict) and s.get("Sid") == sid)]
    assert sum(len(d["Statement"]) for d in docs) == before - 1, f"{resource} has no statement {sid}"
    return doc


def run(records=CALLS, doc=None):
    out, text = iam_check.run(records, npm_prefix=NPM, doc=doc if doc is not None else template())
    return out, text


def test_the_template_resolves_with_the_local_names():
    t = tpl.Template()
    fns = t.functions()
    assert sorted(fns) == [f"stackdrop-{n}" for n in sorted(["validate", "claim", "provision", "launch", "poll", "finish"])]
    assert fns["stackdrop-provision"] == {"logical": "ProvisionFunction", "role": "ProvisionRole",
                                          "log_group": "/aws/lambda/stackdrop-provision"}
    statements = {s["Sid"]: s for p in t.role_policies("ProvisionRole") for s in p["policy"]["Statement"]}
    assert statements["WriteInstanceRolesOnlyUnderTheBoundary"]["Condition"] == {
        "StringEquals": {"iam:PermissionsBoundary": "arn:aws:iam::123456789012:policy/stackdrop-instance-boundary"}}
    assert statements["OwnLogs"]["Resource"] == "arn:aws:logs:us-east-1:123456789012:log-group:/aws/lambda/stackdrop-provision:*"
    finish = {s["Sid"]: s for p in t.role_policies("FinishRole") for s in p["policy"]["Statement"]}
    assert finish["PassTheSchedulerRole"]["Resource"] == "arn:aws:iam::123456789012:role/stackdrop-scheduler"
    boundary = t.boundary()["policy"]["Statement"]
    assert boundary[0] == {"Sid": "AllowAtMost", "Effect": "Allow", "Action": ["*"], "Resource": "*"}
    sandboxed = tpl.Template(parameters={"InstanceBoundaryAllowedActions": iam_check.SANDBOX_ALLOWED})
    assert sandboxed.boundary()["policy"]["Statement"][0]["Action"] == iam_check.SANDBOX_ALLOWED


def test_the_sandbox_list_is_the_one_the_template_documents():
    described = " ".join(template()["Parameters"]["InstanceBoundaryAllowedActions"]["Description"].split())
    described = described.replace(", ", ",")  # the folded YAML breaks the list after a comma
    listed = ",".join(a for a in iam_check.SANDBOX_ALLOWED if a != "kms:Decrypt")
    assert listed in described
    assert "kms:Decrypt for secrets under a customer managed key" in described


def test_user_data_variables_and_secret_arns():
    v = iam_check.user_data_vars("#!/bin/bash\n# c\nSD_BUCKET='b'\nSD_KEY='a b'\\''c.zip'\n"
                                 "SD_SECRETS='DB=/app/db\nK=arn:aws:ssm:eu-west-1:1:parameter/k:3\n'\n"
                                 "SD_BOOTSTRAP_GZ=H4sI\nrest")
    assert v == {"SD_BUCKET": "b", "SD_KEY": "a b'c.zip", "SD_SECRETS": "DB=/app/db\nK=arn:aws:ssm:eu-west-1:1:parameter/k:3\n"}
    assert iam_check.secret_parameter_arn("/app/db:label") == "arn:aws:ssm:us-east-1:123456789012:parameter/app/db"
    assert iam_check.secret_parameter_arn("arn:aws:ssm:eu-west-1:1:parameter/k:3") == "arn:aws:ssm:eu-west-1:1:parameter/k"


@needs_engine
def test_every_recorded_call_and_every_instance_call_is_allowed_by_the_template():
    out, text = run()
    assert out["denied"] == [] and out["problems"] == [], text
    assert out["figures"]["simulations"] > len({r["operation"] for r in CALLS})
    # Least privilege: what this slice does not exercise is listed (connect's ingress rule here).
    assert "ec2:AuthorizeSecurityGroupIngress (OpenOnlyStackdropSecurityGroups)" in out["unused"]["ProvisionRole"]


@needs_engine
def test_a_role_without_one_statement_is_denied_with_the_statement_to_add():
    out, text = run(doc=without(template(), "ProvisionRole", "TagInstanceRolesAndProfilesWithStackdropTags"))
    denied = {(d["role"], d["action"]) for d in out["denied"]}
    assert denied == {("ProvisionRole", "iam:TagRole"), ("ProvisionRole", "iam:TagInstanceProfile")}, text
    role = next(d for d in out["denied"] if d["action"] == "iam:TagRole")
    assert role["result"] == "ImplicitlyDenied" and role["why"] == "iam CreateRole"
    assert role["add"] == {"Effect": "Allow", "Action": "iam:TagRole", "Resource": "arn:aws:iam::123456789012:role/stackdrop/*"}
    assert "statement to add to ProvisionRole" in text and "iam-check: FAILED" in text


@needs_engine
def test_tag_keys_beyond_the_condition_are_denied_and_the_failing_condition_named():
    # The template as it stood at 1f3f173: TagRole with stackdrop:* keys only, but the plan's
    # tags include Name.
    doc = template()
    for st in doc["Resources"]["ProvisionRole"]["Properties"]["Policies"][0]["PolicyDocument"]["Statement"]:
        if st["Sid"] == "TagInstanceRolesAndProfilesWithStackdropTags":
            st["Condition"] = {"ForAllValues:StringLike": {"aws:TagKeys": "stackdrop:*"}}
    out, text = run(doc=doc)
    tag_role = next(d for d in out["denied"] if d["action"] == "iam:TagRole")
    miss = tag_role["near_misses"][0]
    assert miss["statement"] == ["ProvisionRole/provision", "TagInstanceRolesAndProfilesWithStackdropTags"]
    assert miss["failing"][0]["key"] == "aws:TagKeys" and miss["failing"][0]["unmatchedValues"] == ["Name"]


@needs_engine
def test_an_instance_call_the_boundary_does_not_allow_is_denied_by_the_boundary():
    doc = template()
    doc["Parameters"]["InstanceBoundaryAllowedActions"]["Default"] = "s3:GetObjectVersion,logs:CreateLogStream,logs:GetLogEvents,ec2:CreateTags"
    out, text = run(doc=doc)
    denied = {(d["who"].split(" ")[0], d["action"], d["result"]) for d in out["denied"]}
    assert denied == {("instance", "logs:PutLogEvents", "ImplicitlyDenied")}, text
    entry = next(d for d in out["denied"] if not d["who"].endswith("sandboxed"))
    assert entry["boundary"]["result"] == "ImplicitlyDenied" and "add" not in entry


@needs_engine
def test_a_deny_in_the_boundary_wins_over_the_instance_policy():
    doc = template()
    stmts = doc["Resources"]["InstanceBoundary"]["Properties"]["PolicyDocument"]["Statement"]
    stmts.append({"Sid": "NoLogs", "Effect": "Deny", "Action": "logs:PutLogEvents", "Resource": "*"})
    out, _ = run(doc=doc)
    assert {d["action"] for d in out["denied"]} == {"logs:PutLogEvents"}
    assert all(d["boundary"]["denied_by"] == [["InstanceBoundary", "NoLogs"]] for d in out["denied"])


@needs_engine
def test_a_context_key_the_engine_ignores_fails_the_check():
    records = copy.deepcopy(CALLS)
    call = next(r for r in records if r["operation"] == "CreateRole")
    call["auth"][0]["context"]["iam:PermisionsBoundary"] = "typo"
    out, text = run(records)
    assert [d["action"] for d in out["denied"]] == ["iam:CreateRole"]
    assert "ignored context keys ['iam:PermisionsBoundary']" in out["denied"][0]["result"]


@needs_engine
def test_an_unmapped_call_or_an_unknown_function_fails_the_check():
    records = copy.deepcopy(CALLS) + [
        {"function": "stackdrop-launch", "service": "ec2", "operation": "ModifyInstanceAttribute", "status": 200,
         "unmapped": True, "detail": "ec2 ModifyInstanceAttribute (POST /)", "auth": [], "facts": {}},
        {"function": "unknown", "service": "s3", "operation": "GetObject", "status": 200,
         "auth": [{"action": "s3:GetObject", "resource": "arn:aws:s3:::b/k", "context": {}}], "facts": {}}]
    out, text = run(records)
    assert len(out["problems"]) == 2, text
    assert "ModifyInstanceAttribute is not mapped" in out["problems"][0]
    assert "unknown: called s3 GetObject but is no function of the template" in out["problems"][1]


@needs_engine
def test_the_command_line_exits_1_on_a_denial_and_writes_the_json(tmp_path, capsys):
    calls = tmp_path / "calls.jsonl"
    call = copy.deepcopy(next(r for r in CALLS if r["operation"] == "GetObject"))
    call["auth"][0]["resource"] = "arn:aws:s3:::someone-elses-bucket/k"
    calls.write_text(json.dumps(call) + "\n")
    rc = iam_check.main([str(calls), "--npm-prefix", NPM, "--json", str(tmp_path / "out.json")])
    assert rc == 1
    assert json.loads((tmp_path / "out.json").read_text())["denied"][0]["resource"] == "arn:aws:s3:::someone-elses-bucket/k"
    assert "DENIED stackdrop-validate (role ValidateRole): s3:GetObjectVersion" in capsys.readouterr().out
    (tmp_path / "empty.jsonl").write_text("")
    assert iam_check.main([str(tmp_path / "empty.jsonl"), "--npm-prefix", NPM]) == 1


@needs_engine
def test_the_operators_cli_and_a_test_only_bucket_are_counted_not_checked():
    cli = {"function": "stackdrop-cli", "service": "states", "operation": "StartExecution", "status": 200,
           "unmapped": True, "detail": "states StartExecution (POST /)", "auth": [], "facts": {}}
    direct = copy.deepcopy(next(r for r in CALLS if r["operation"] == "GetObject"))
    direct["auth"][0]["resource"] = "arn:aws:s3:::stackdrop-direct/k.zip"
    out, text = run(copy.deepcopy(CALLS) + [cli, direct])
    assert out["denied"] == [] and out["problems"] == [], text
    assert out["skipped"] == {"stackdrop-cli (the operator's own credentials)": 1,
                              "a test-only bucket (stackdrop-direct)": 1}
    assert "not checked: 1 calls of a test-only bucket (stackdrop-direct)" in text


@needs_engine
def test_the_state_machines_and_rules_roles_are_checked_too():
    out, text = run()
    assert "DeployStateMachineRole" not in out["unused"] and "TriggerRole" not in out["unused"], text
    out, text = run(doc=without(template(), "TeardownStateMachineRole", "InvokeTheSteps"))
    assert {(d["role"], d["action"], d["resource"].rsplit(":", 1)[-1]) for d in out["denied"]} == {
        ("TeardownStateMachineRole", "lambda:InvokeFunction", f"stackdrop-{n}") for n in ("validate", "claim", "finish")}, text


def guest_call(action, resource, operation, context=None, iid="i-5558d5e37a886c08f"):
    return {"function": f"instance:{iid}", "service": action.split(":")[0], "operation": operation, "status": 200,
            "auth": [{"action": action, "resource": resource, "context": context or {}}], "facts": {}}


@needs_engine
def test_what_a_real_guest_did_is_checked_against_its_role_and_its_expected_calls():
    group = "arn:aws:logs:us-east-1:123456789012:log-group:/stackdrop/instance/e2e-run-19289c--hello--instance--greeter"
    ok = guest_call("logs:PutLogEvents", f"{group}:log-stream:i-5558d5e37a886c08f/app", "PutLogEvents")
    out, text = run(copy.deepcopy(CALLS) + [ok])
    assert out["denied"] == [] and out["problems"] == [] and out["figures"]["guest_calls"] == 1, text
    # Another instance's stream: denied by its own role; an action the list lacks: a problem.
    other = guest_call("logs:PutLogEvents", f"{group}x:log-stream:i-0/app", "PutLogEvents")
    extra = guest_call("logs:DescribeLogStreams", group, "DescribeLogStreams")
    out, text = run(copy.deepcopy(CALLS) + [other, extra])
    assert [(d["action"], d["result"]) for d in out["denied"]] == [("logs:PutLogEvents", "ImplicitlyDenied")] * 2 + \
        [("logs:DescribeLogStreams", "ImplicitlyDenied")] * 2, text
    assert out["problems"] == ["instance:i-5558d5e37a886c08f called logs:DescribeLogStreams (DescribeLogStreams), "
                               "which its expected calls lack: add it to iam_check.Check.expected"]


@needs_engine
def test_a_state_machine_naming_a_function_the_template_does_not_substitute_fails():
    doc = template()
    del doc["Resources"]["DeployStateMachine"]["Properties"]["DefinitionSubstitutions"]["PollFunctionArn"]
    out, text = run(doc=doc)
    assert out["problems"] == ["DeployStateMachine: ../statemachine/deploy.asl.json names ${PollFunctionArn}, "
                               "which its DefinitionSubstitutions lack"], text


@needs_engine
def test_an_unused_action_with_a_named_path_is_listed_apart_from_the_unused():
    out, text = run()
    assert "iam:PutRolePermissionsBoundary (WriteInstanceRolesOnlyUnderTheBoundary)" not in \
        out["unused"].get("ProvisionRole", []), text
    assert any(a.startswith("iam:PutRolePermissionsBoundary (WriteInstanceRolesOnlyUnderTheBoundary): a role")
               for a in out["untaken"]["ProvisionRole"]), text
    assert "allowed for a path this run did not take" in text


@needs_engine
def test_a_call_signed_as_another_role_than_the_functions_fails():
    calls = copy.deepcopy(CALLS)
    poll = next(r for r in calls if r["function"] == "stackdrop-poll")
    poll["principal"] = "arn:aws:sts::123456789012:assumed-role/stackdrop-finish-role/stackdrop-poll"
    out, text = run(calls)
    assert any(p.startswith("stackdrop-poll: called") and "not as its template role" in p
               for p in out["problems"]), text

"""`make package`, the first half of `make deploy` (mk/aws.mk), against local AWS: the real AWS
CLI's `cloudformation package` on infra/template.yaml uploads what `make build` built. Read back
from S3: each function's package is the build of its own binary (`${Prefix}-validate` runs
`stackdrop-validate`), each state machine's definition is its own ASL file, and nothing is left
pointing at a local path.

What local AWS cannot show: the second half, `cloudformation deploy`. moto's CloudFormation has
no SAM transform (it answers "Fn::GetAtt references undefined resource ValidateFunction"); that
step needs an account. The release build takes 25 minutes, so the packages here are stand-ins,
one distinct zip per binary where `make build` puts them, beside copies of the template and the
ASL files (CodeUri and DefinitionUri are relative to the template).
"""

import os
import shutil
import subprocess
import uuid
import zipfile

from conftest import ROOT
from template import load_template

MACHINES = ("deploy", "teardown")


def stand_in_build(tree) -> dict[str, bytes]:
    """A tree laid out as the repository after `make build`; returns each binary's zip."""
    (tree / "infra").mkdir()
    shutil.copy(os.path.join(ROOT, "infra", "template.yaml"), tree / "infra" / "template.yaml")
    shutil.copytree(os.path.join(ROOT, "statemachine"), tree / "statemachine")
    lambda_dir = tree / "target" / "lambda"
    zips = {}
    for name in ("validate", "claim", "provision", "launch", "poll", "finish"):
        binary = f"stackdrop-{name}"
        (lambda_dir / binary).mkdir(parents=True)
        path = lambda_dir / binary / "bootstrap.zip"
        with zipfile.ZipFile(path, "w") as z:
            z.writestr("bootstrap", f"#!/bin/sh\n# {binary}\n")
        zips[binary] = path.read_bytes()
    (lambda_dir / "ARCH").write_text("arm64\n")
    return zips


def make_package(sd, tree, *args: str) -> subprocess.CompletedProcess:
    lambda_dir = tree / "target" / "lambda"
    return subprocess.run(
        ["make", "--no-print-directory", "-s", "package", "REGION=us-east-1",
         f"TEMPLATE={tree / 'infra' / 'template.yaml'}", f"LAMBDA_DIR={lambda_dir}", *args],
        cwd=ROOT, env=sd.aws_env(), capture_output=True, text=True, timeout=300)


def read(sd, bucket: str, key: str) -> bytes:
    return sd.client("s3").get_object(Bucket=bucket, Key=key)["Body"].read()


def suffix(name: dict) -> str:
    """`validate` of a name written `!Sub ${Prefix}-validate`."""
    return name["Fn::Sub"].removeprefix("${Prefix}-")


def test_make_package_uploads_each_functions_own_build_and_the_state_machines(sd, tmp_path):
    zips = stand_in_build(tmp_path)
    bucket = f"artifacts-{uuid.uuid4().hex[:8]}"
    sd.client("s3").create_bucket(Bucket=bucket)

    done = make_package(sd, tmp_path, f"ARTIFACT_BUCKET={bucket}")
    assert done.returncode == 0, done.stdout + done.stderr

    packaged = load_template(str(tmp_path / "target" / "lambda" / "packaged.yaml"))
    resources = packaged["Resources"].values()
    functions = [r["Properties"] for r in resources if r["Type"] == "AWS::Serverless::Function"]
    assert sorted(f"stackdrop-{suffix(f['FunctionName'])}" for f in functions) == sorted(zips)
    for f in functions:
        binary = f"stackdrop-{suffix(f['FunctionName'])}"
        uri = f["CodeUri"]
        assert uri.startswith(f"s3://{bucket}/"), f"{binary}: CodeUri {uri}"
        assert read(sd, bucket, uri.removeprefix(f"s3://{bucket}/")) == zips[binary], \
            f"{binary}: its function's package is another build"

    machines = [r["Properties"] for r in resources if r["Type"] == "AWS::Serverless::StateMachine"]
    assert sorted(suffix(m["Name"]) for m in machines) == sorted(MACHINES)
    for m in machines:
        where = m["DefinitionUri"]
        assert where["Bucket"] == bucket
        with open(os.path.join(ROOT, "statemachine", f"{suffix(m['Name'])}.asl.json"), "rb") as f:
            assert read(sd, bucket, where["Key"]) == f.read()

    text = (tmp_path / "target" / "lambda" / "packaged.yaml").read_text()
    assert "../" not in text, "a local path is left in the packaged template"


def test_make_package_without_a_bucket_or_a_build_says_what_to_do_and_uploads_nothing(sd, tmp_path):
    stand_in_build(tmp_path)
    bucket = f"artifacts-{uuid.uuid4().hex[:8]}"
    sd.client("s3").create_bucket(Bucket=bucket)

    no_bucket = make_package(sd, tmp_path)
    assert no_bucket.returncode == 2
    assert "set ARTIFACT_BUCKET to an S3 bucket of yours in us-east-1" in no_bucket.stderr

    (tmp_path / "target" / "lambda" / "ARCH").unlink()
    no_build = make_package(sd, tmp_path, f"ARTIFACT_BUCKET={bucket}")
    assert no_build.returncode == 2
    assert "no packages in" in no_build.stderr and "run make build first" in no_build.stderr

    assert sd.client("s3").list_objects_v2(Bucket=bucket).get("KeyCount") == 0

"""End-to-end tests: the real AWS CLI uploads bundles to local AWS (moto in server mode), the
real state machine (statemachine/deploy.asl.json) runs in moto and calls the real Lambda
binaries under cargo lambda watch. Every assertion reads AWS's own API (boto3), never the
project's output alone. The environment is started once per session and stopped at the end.
"""

import copy
import json
import os
import shutil
import sys
import uuid
import zipfile

import pytest

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
sys.path.insert(0, os.path.join(ROOT, "infra", "local"))

from dev import Stackdrop  # noqa: E402

BUCKET = "stackdrop-bundles"
HELLO = os.path.join(ROOT, "examples", "hello")


@pytest.fixture(scope="session")
def sd():
    env = Stackdrop(port=0, lambda_port=0, table="stackdrop-state", quiet=True)
    env.start()
    yield env
    env.stop()


class Bundles:
    """Builds bundles from examples/hello under a unique app name, so tests never share a stack."""

    def __init__(self, tmp_path):
        self.tmp = tmp_path

    def make(self, app: str, edit=None, raw_stack: str | None = None) -> str:
        src = self.tmp / f"src-{uuid.uuid4().hex[:6]}"
        shutil.copytree(HELLO, src)
        app_json = json.loads((src / "app.json").read_text())
        app_json["name"] = app
        (src / "app.json").write_text(json.dumps(app_json))
        stack = json.loads((src / "stack.json").read_text())
        if edit:
            stack = copy.deepcopy(stack)
            edit(stack)
        (src / "stack.json").write_text(raw_stack if raw_stack is not None else json.dumps(stack, indent=2))
        path = str(self.tmp / f"{app}-{uuid.uuid4().hex[:6]}.zip")
        with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as z:
            for root, _, files in os.walk(src):
                for f in files:
                    full = os.path.join(root, f)
                    z.write(full, os.path.relpath(full, src))
        return path


@pytest.fixture
def bundles(tmp_path):
    return Bundles(tmp_path)


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:6]}"

"""The Lambda runtime (lambdas.py) with a function that speaks the Runtime API
(testdata/fake_function.py), invoked over HTTP as the router and Step Functions invoke it."""

import json
import os
import sys
import threading
import time
import urllib.error
import urllib.request

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import lambdas  # noqa: E402

FAKE = os.path.join(HERE, "testdata", "fake_function.py")
OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


@pytest.fixture
def runtime():
    lines: list[str] = []
    rt = lambdas.Runtime(log=lines.append).start()
    rt.lines = lines
    yield rt
    rt.stop()


def add(rt, name="fn", **kw):
    rt.add(lambdas.Function(name, FAKE, environment={"STACKDROP_TABLE": "t", **kw.pop("environment", {})}, **kw))


def invoke(rt, payload, name="fn"):
    req = urllib.request.Request(f"http://127.0.0.1:{rt.port}/2015-03-31/functions/{name}/invocations",
                                 data=json.dumps(payload).encode(), method="POST")
    try:
        with OPENER.open(req, timeout=30) as r:
            return r.status, r.headers.get("X-Amz-Function-Error"), json.load(r)
    except urllib.error.HTTPError as e:
        return e.code, e.headers.get("X-Amzn-ErrorType"), json.load(e)


def test_an_invocation_gets_the_functions_answer_with_its_environment(runtime):
    add(runtime, timeout=7, memory=512)
    status, error, body = invoke(runtime, {"do": "echo", "x": "é$`"})
    assert (status, error) == (200, None)
    assert body["event"] == {"do": "echo", "x": "é$`"}
    assert body["env"]["AWS_LAMBDA_FUNCTION_NAME"] == "fn"
    assert body["env"]["AWS_LAMBDA_FUNCTION_MEMORY_SIZE"] == "512"
    assert body["env"]["STACKDROP_TABLE"] == "t"
    assert 5 < body["deadline_in"] <= 7


def test_a_function_error_is_200_with_the_unhandled_header_and_the_error(runtime):
    add(runtime)
    assert invoke(runtime, {"do": "error"}) == (200, "Unhandled", {"errorType": "Boom", "errorMessage": "asked to fail"})


def test_a_function_past_its_timeout_is_killed_and_the_next_invocation_gets_a_new_process(runtime):
    add(runtime, timeout=1)
    _, _, first = invoke(runtime, {"do": "echo"})
    t0 = time.monotonic()
    status, error, body = invoke(runtime, {"do": "sleep", "seconds": 30})
    assert (status, error, body["errorType"]) == (200, "Unhandled", "Sandbox.Timedout")
    assert time.monotonic() - t0 < 10
    _, error, after = invoke(runtime, {"do": "echo"})
    assert error is None and after["pid"] != first["pid"]
    with pytest.raises(ProcessLookupError):
        os.kill(first["pid"], 0)


def test_a_process_that_exits_during_an_invocation_is_a_runtime_exit_error_and_is_replaced(runtime):
    add(runtime)
    status, error, body = invoke(runtime, {"do": "exit", "code": 7})
    assert (status, error, body["errorType"]) == (200, "Unhandled", "Runtime.ExitError")
    assert "exit status 7" in body["errorMessage"]
    assert invoke(runtime, {"do": "echo"})[1] is None


def test_invocations_at_once_each_get_a_sandbox_up_to_the_concurrency(runtime):
    add(runtime, name="wide", concurrency=4)
    add(runtime, name="narrow", concurrency=1)
    for name, want in (("wide", 4), ("narrow", 1)):
        results = []
        threads = [threading.Thread(target=lambda: results.append(invoke(runtime, {"do": "sleep", "seconds": 1}, name)))
                   for _ in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert [r[:2] for r in results] == [(200, None)] * 4
        assert len({r[2]["pid"] for r in results}) == want


def test_an_unknown_function_is_a_404_resource_not_found(runtime):
    status, kind, body = invoke(runtime, {}, name="nope")
    assert (status, kind) == (404, "ResourceNotFoundException")
    assert "nope" in body["message"]


def test_a_missing_binary_is_refused_when_added():
    rt = lambdas.Runtime(log=lambda _: None)
    try:
        with pytest.raises(FileNotFoundError, match="cargo build --workspace --all-targets"):
            rt.add(lambdas.Function("fn", "/nonexistent/stackdrop-validate"))
    finally:
        rt.server_close()


def test_stop_ends_every_process(runtime):
    add(runtime, concurrency=3)
    results = []
    threads = [threading.Thread(target=lambda: results.append(invoke(runtime, {"do": "sleep", "seconds": 0.5})))
               for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    pids = {r[2]["pid"] for r in results}
    runtime.stop()
    for pid in pids:
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)
    runtime.stop = lambda: None  # the fixture's stop: already done

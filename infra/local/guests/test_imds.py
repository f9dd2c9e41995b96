"""imds.py: IMDSv2 token rules, guests told apart by source address, the metadata paths."""

from __future__ import annotations

import http.client
import json
import threading

import pytest

from guests import imds

A, B = "169.254.42.1", "169.254.42.2"


def inst(address: str = A, **kw) -> imds.Instance:
    base = dict(instance_id="i-0aaa", address=address, image_id="ami-1234", instance_type="t3.small",
                region="eu-west-1", availability_zone="eu-west-1b", mac="02:00:00:aa:bb:cc",
                user_data=b"#!/bin/bash\necho hi\n", role_name="app-role",
                instance_profile_arn="arn:aws:iam::123456789012:instance-profile/p",
                instance_profile_id="AIPA123", metadata_tags="enabled",
                tags=lambda: {"Name": "web", "stackdrop:app": "demo"},
                credentials=lambda: {"AccessKeyId": "ASIAMOTO", "SecretAccessKey": "s",
                                     "Token": "t", "Expiration": "2030-01-01T00:00:00Z"})
    base.update(kw)
    return imds.Instance(**base)


class Env:
    def __init__(self, *instances: imds.Instance) -> None:
        self.now = 1000.0
        self.tokens = imds.TokenStore(clock=lambda: self.now)
        self.instances = {i.address: i for i in instances}

    def put_token(self, address: str = A, ttl: str | None = "60", **headers: str):
        h = {k.lower(): v for k, v in headers.items()}
        if ttl is not None:
            h[imds.TTL_HEADER.lower()] = ttl
        return imds.route("PUT", "/latest/api/token", h, address, self.instances, self.tokens)

    def get(self, path: str, token: str | None = None, address: str = A):
        h = {imds.TOKEN_HEADER.lower(): token} if token is not None else {}
        return imds.route("GET", path, h, address, self.instances, self.tokens)


def test_token_needs_the_ttl_header_and_refuses_forwarded_requests():
    e = Env(inst())
    assert e.put_token(ttl=None)[0] == 400
    assert e.put_token(ttl="0")[0] == 400
    assert e.put_token(ttl="21601")[0] == 400
    assert e.put_token(ttl="abc")[0] == 400
    assert e.put_token(**{"X-Forwarded-For": "10.0.0.1"})[0] == 403
    status, token, _ = e.put_token(ttl="21600")
    assert status == 200 and len(token) > 20
    assert imds.route("GET", "/latest/api/token", {}, A, e.instances, e.tokens)[0] == 405


def test_required_tokens_401_without_or_with_a_bad_token():
    e = Env(inst(http_tokens="required"))
    assert e.get("/latest/meta-data/instance-id")[0] == 401
    assert e.get("/latest/meta-data/instance-id", token="forged")[0] == 401
    token = e.put_token()[1].decode()
    assert e.get("/latest/meta-data/instance-id", token=token)[:2] == (200, b"i-0aaa")


def test_optional_tokens_serve_tokenless_but_still_reject_a_bad_token():
    e = Env(inst(http_tokens="optional"))
    assert e.get("/latest/meta-data/instance-id")[:2] == (200, b"i-0aaa")
    assert e.get("/latest/meta-data/instance-id", token="forged")[0] == 401


def test_token_expires_and_is_bound_to_its_instance():
    e = Env(inst(), inst(address=B, instance_id="i-0bbb"))
    token = e.put_token(ttl="10")[1].decode()
    assert e.get("/latest/meta-data/instance-id", token=token, address=B)[0] == 401
    e.now += 9
    assert e.get("/latest/meta-data/instance-id", token=token)[0] == 200
    e.now += 2
    assert e.get("/latest/meta-data/instance-id", token=token)[0] == 401


def test_guests_told_apart_by_source_address_and_strangers_get_nothing():
    e = Env(inst(), inst(address=B, instance_id="i-0bbb", http_tokens="optional"))
    assert e.get("/latest/meta-data/instance-id", address=B)[1] == b"i-0bbb"
    assert e.get("/latest/meta-data/local-ipv4", address=B)[1] == B.encode()
    assert e.get("/latest/meta-data/instance-id", address="169.254.42.9")[0] == 404
    assert e.put_token(address="169.254.42.9")[0] == 404


@pytest.mark.parametrize("path,expected", [
    ("meta-data/instance-id", b"i-0aaa"),
    ("meta-data/ami-id", b"ami-1234"),
    ("meta-data/instance-type", b"t3.small"),
    ("meta-data/local-ipv4", A.encode()),
    ("meta-data/mac", b"02:00:00:aa:bb:cc"),
    ("meta-data/placement/region", b"eu-west-1"),
    ("meta-data/placement/availability-zone", b"eu-west-1b"),
    ("meta-data/iam/security-credentials/", b"app-role"),
    ("meta-data/tags/instance", b"Name\nstackdrop:app"),
    ("meta-data/tags/instance/stackdrop:app", b"demo"),
    ("user-data", b"#!/bin/bash\necho hi\n"),
])
def test_paths(path: str, expected: bytes):
    e = Env(inst(http_tokens="optional"))
    for prefix in ("/latest/", "/2021-03-23/"):
        assert e.get(prefix + path)[:2] == (200, expected), prefix + path


def test_json_documents():
    e = Env(inst(http_tokens="optional"))
    creds = json.loads(e.get("/latest/meta-data/iam/security-credentials/app-role")[1])
    assert creds["Code"] == "Success" and creds["AccessKeyId"] == "ASIAMOTO"
    assert creds["Token"] == "t" and creds["Expiration"] == "2030-01-01T00:00:00Z"
    info = json.loads(e.get("/latest/meta-data/iam/info")[1])
    assert info["InstanceProfileArn"].endswith(":instance-profile/p")
    doc = json.loads(e.get("/latest/dynamic/instance-identity/document")[1])
    assert (doc["instanceId"], doc["region"], doc["availabilityZone"], doc["imageId"]) == \
        ("i-0aaa", "eu-west-1", "eu-west-1b", "ami-1234")
    assert e.get("/latest/meta-data/iam/security-credentials/app-role")[2] == "application/json"


def test_listings_and_404s():
    e = Env(inst(http_tokens="optional", metadata_tags="disabled", user_data=None,
                 role_name=None))
    listing = e.get("/latest/meta-data/")[1].decode().split("\n")
    assert "instance-id" in listing and "placement/" in listing
    assert "iam/" not in listing and "tags/" not in listing
    assert e.get("/latest/")[1] == b"meta-data/\ndynamic/"
    assert e.get("/latest/user-data")[0] == 404  # no user data: 404, as EC2 answers
    assert e.get("/latest/meta-data/tags/instance")[0] == 404  # InstanceMetadataTags disabled
    assert e.get("/latest/meta-data/iam/info")[0] == 404
    assert e.get("/latest/meta-data/nope")[0] == 404
    assert e.get("/not-a-version/meta-data/instance-id")[0] == 404


def test_http_endpoint_disabled():
    e = Env(inst(http_endpoint="disabled"))
    assert e.put_token()[0] == 404


def test_the_server_over_http():
    """The same rules through a real socket (loopback here; the namespace in the real tests)."""
    srv = imds.Server(("127.0.0.1", 0))
    srv.add(inst(address="127.0.0.1"))
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    try:
        def call(method: str, path: str, headers: dict[str, str]) -> tuple[int, bytes]:
            c = http.client.HTTPConnection("127.0.0.1", srv.server_address[1], timeout=5)
            c.request(method, path, headers=headers)
            r = c.getresponse()
            return r.status, r.read()
        assert call("GET", "/latest/meta-data/instance-id", {})[0] == 401
        status, token = call("PUT", "/latest/api/token", {imds.TTL_HEADER: "30"})
        assert status == 200
        assert call("GET", "/latest/meta-data/instance-id",
                    {imds.TOKEN_HEADER: token.decode()}) == (200, b"i-0aaa")
        srv.remove("127.0.0.1")
        assert call("GET", "/latest/meta-data/instance-id",
                    {imds.TOKEN_HEADER: token.decode()})[0] == 404
    finally:
        srv.shutdown()
        srv.server_close()

"""Records every AWS call a stackdrop Lambda makes, as IAM would authorize it (issue 11 item 1).

The router (stackdrop_local.py) hands each request from a Lambda (the Rust SDK's User-Agent,
which carries ``app/<function name>``: see functions/adapters/src/lib.rs) to a ``Recorder``
before it forwards it to moto, and the answer after. One JSON line per call:

    {"function": "stackdrop-provision", "service": "iam", "operation": "CreateRole",
     "status": 200, "error": null,
     "auth": [{"action": "iam:CreateRole", "resource": "arn:aws:iam::...:role/stackdrop/...",
               "context": {"iam:PermissionsBoundary": "...", "aws:TagKeys": [...], ...}},
              {"action": "iam:TagRole", ...}],
     "facts": {...}}

``auth`` is every authorization AWS makes for that one call (a create with tags is also a
TagRole / TagResource / CreateTags with ``ec2:CreateAction``; a profile given to EC2 is an
iam:PassRole), on concrete resource ARNs, with the condition keys the template's policies test:
request tags (``aws:RequestTag/K`` and ``aws:TagKeys`` from one tag map), resource tags read from
moto before the call changes them (``aws:ResourceTag/K``), ``iam:PermissionsBoundary``,
``iam:PolicyARN``, ``iam:PassedToService``, ``ec2:LaunchTemplate``, ``events:source``,
``dynamodb:LeadingKeys``, ``s3:VersionId``. ``facts`` keep what the instance checks need (the
instance role's policies, the launch template's user data, the instances launched).

Only the calls stackdrop makes are mapped: any other is recorded with ``"unmapped": true`` and
fails the evaluation (iam_check.py), so a new call cannot slip past unchecked. Calls answered
by an injected fault never reached AWS and are not recorded.
"""

from __future__ import annotations

import base64
import json
import re
import threading
import urllib.parse
import xml.etree.ElementTree as ET
from typing import Any, Callable

APP_RE = re.compile(r"(?:^|\s)app/([A-Za-z0-9!#$%&'*+\-.^_`|~]+)")
SCOPE_RE = re.compile(r"Credential=([^/]+)/\d{8}/([^/]+)/([^/]+)/aws4_request")
# Roles and profiles of instances live under this IAM path (the template's policies are
# scoped to it). A call on one that does not exist yet has no ARN to read from AWS: the
# recorder names it with this path, the one stackdrop creates it under.
INSTANCE_IAM_PATH = "/stackdrop/"


class UnmappedCall(Exception):
    pass


def function_of(headers: dict[str, str]) -> str | None:
    """The function that made the call: ``app/NAME`` in the Rust SDK's User-Agent."""
    ua = " ".join(v for k, v in headers.items() if k.lower() in ("user-agent", "x-amz-user-agent"))
    if "aws-sdk-rust" not in ua:
        return None
    m = APP_RE.search(ua)
    return m.group(1) if m else "unknown"


def signed_by(headers: dict[str, str]) -> tuple[str | None, str | None]:
    """The access key and the service of a SigV4 request's credential scope."""
    auth = next((v for k, v in headers.items() if k.lower() == "authorization"), "")
    m = SCOPE_RE.search(auth)
    return (m.group(1), m.group(3)) if m else (None, None)


def service_of(headers: dict[str, str]) -> str | None:
    return signed_by(headers)[1]


def tag_context(tags: dict[str, str]) -> dict[str, Any]:
    """aws:RequestTag/K and aws:TagKeys, from one map (the engine derives neither)."""
    ctx: dict[str, Any] = {f"aws:RequestTag/{k}": v for k, v in tags.items()}
    if tags:
        ctx["aws:TagKeys"] = sorted(tags)
    return ctx


def resource_tag_context(tags: dict[str, str], ec2: bool = False) -> dict[str, Any]:
    ctx: dict[str, Any] = {f"aws:ResourceTag/{k}": v for k, v in tags.items()}
    if ec2:
        ctx.update({f"ec2:ResourceTag/{k}": v for k, v in tags.items()})
    return ctx


def created(action: str, arn: str, tags: dict[str, str], tag_action: str,
            context: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    """A create that tags what it creates: the create, with its request tags (and `context`), and
    the tagging AWS authorizes beside it (EC2's CreateTags names the create in ec2:CreateAction)."""
    out = [{"action": action, "resource": arn, "context": {**tag_context(tags), **(context or {})}}]
    if tags:
        tag_ctx = tag_context(tags)
        if tag_action == "ec2:CreateTags":
            tag_ctx = {"ec2:CreateAction": action.split(":", 1)[1], **tag_ctx}
        out.append({"action": tag_action, "resource": arn, "context": tag_ctx})
    return out


def local_name(tag: str) -> str:
    return tag.rsplit("}", 1)[-1]


def xml_elements(data: bytes, name: str) -> list[ET.Element]:
    """Every element called `name` (any namespace, any depth), in order; none if not XML."""
    try:
        root = ET.fromstring(data)
    except ET.ParseError:
        return []
    return [e for e in root.iter() if local_name(e.tag) == name]


def xml_find_all(data: bytes, name: str) -> list[str]:
    """Texts of every element called `name`, each once, in order."""
    return list(dict.fromkeys(e.text or "" for e in xml_elements(data, name)))


def xml_set(data: bytes, name: str) -> list[str]:
    """Texts of the ``item`` children of every element called `name` (an EC2 id set)."""
    return [i.text or "" for e in xml_elements(data, name) for i in e]


def pairs(params: dict[str, str], prefix: str) -> dict[str, str]:
    """A query-protocol Key/Value list: ``{prefix}.N.Key`` / ``{prefix}.N.Value``."""
    out, n = {}, 1
    while f"{prefix}.{n}.Key" in params:
        out[params[f"{prefix}.{n}.Key"]] = params.get(f"{prefix}.{n}.Value", "")
        n += 1
    return out


def query_tags(params: dict[str, str], prefix: str, resource_type: str) -> dict[str, str]:
    """Tags of a query-protocol TagSpecification list (``{prefix}.N.ResourceType`` /
    ``.Tag.M.Key``), of one resource type."""
    out: dict[str, str] = {}
    n = 1
    while f"{prefix}.{n}.ResourceType" in params or f"{prefix}.{n}.Tag.1.Key" in params:
        if params.get(f"{prefix}.{n}.ResourceType") == resource_type:
            out.update(pairs(params, f"{prefix}.{n}.Tag"))
        n += 1
    return out


def member_tags(params: dict[str, str]) -> dict[str, str]:
    """IAM's ``Tags.member.N`` list."""
    return pairs(params, "Tags.member")


def numbered(params: dict[str, str], prefix: str) -> list[str]:
    out, n = [], 1
    while f"{prefix}.{n}" in params:
        out.append(params[f"{prefix}.{n}"])
        n += 1
    return out


class Lookup:
    """What the recorder reads from moto (directly, never through the router): resource tags
    before a call changes them, a role's boundary and path, a profile's role, a launch
    template's data, an AWS managed policy's document."""

    def __init__(self, client: Callable[[str], Any],
                 sts_as: Callable[[str], Any] | None = None):
        self._client = client
        self._sts_as = sts_as  # an STS client of moto signed with this access key
        self._clients: dict[str, Any] = {}
        self._lock = threading.Lock()
        self._managed: dict[str, Any] = {}
        self._principals: dict[str, str | None] = {}

    def principal(self, access_key: str) -> str | None:
        """Whose credentials these are (moto's GetCallerIdentity for the key: an assumed role's
        ARN for a Lambda run with its template role), once per key."""
        if self._sts_as is None:
            return None
        with self._lock:
            if access_key in self._principals:
                return self._principals[access_key]
        try:
            arn = self._sts_as(access_key).get_caller_identity()["Arn"]
        except Exception:  # noqa: BLE001 - unknown to moto: said so in the record
            arn = None
        with self._lock:
            self._principals[access_key] = arn
        return arn

    def c(self, service: str) -> Any:
        with self._lock:
            if service not in self._clients:
                self._clients[service] = self._client(service)
            return self._clients[service]

    @staticmethod
    def _tags(items: list[dict]) -> dict[str, str]:
        return {t["Key"]: t.get("Value", "") for t in items or []}

    def instance_tags(self, ids: list[str]) -> dict[str, dict[str, str]]:
        out = {i: {} for i in ids}
        try:
            for r in self.c("ec2").describe_instances(InstanceIds=ids)["Reservations"]:
                for i in r["Instances"]:
                    out[i["InstanceId"]] = self._tags(i.get("Tags"))
        except Exception:  # noqa: BLE001 - a missing instance has no tags
            pass
        return out

    def launch_template(self, lt_id: str | None = None, name: str | None = None) -> dict[str, Any]:
        """{"id", "tags", "data"} of a template (data: its latest version's LaunchTemplateData)."""
        ec2 = self.c("ec2")
        try:
            kw = {"LaunchTemplateIds": [lt_id]} if lt_id else {"LaunchTemplateNames": [name]}
            t = ec2.describe_launch_templates(**kw)["LaunchTemplates"][0]
        except Exception:  # noqa: BLE001
            return {"id": lt_id, "tags": {}, "data": {}}
        try:
            v = ec2.describe_launch_template_versions(LaunchTemplateId=t["LaunchTemplateId"],
                                                      Versions=["$Latest"])["LaunchTemplateVersions"][0]
            data = v.get("LaunchTemplateData", {})
        except Exception:  # noqa: BLE001
            data = {}
        return {"id": t["LaunchTemplateId"], "tags": self._tags(t.get("Tags")), "data": data}

    def security_group_tags(self, group_id: str) -> dict[str, str]:
        try:
            g = self.c("ec2").describe_security_groups(GroupIds=[group_id])["SecurityGroups"][0]
            return self._tags(g.get("Tags"))
        except Exception:  # noqa: BLE001
            return {}

    def role(self, name: str) -> dict[str, Any] | None:
        try:
            r = self.c("iam").get_role(RoleName=name)["Role"]
        except Exception:  # noqa: BLE001
            return None
        return {"arn": r["Arn"], "boundary": (r.get("PermissionsBoundary") or {}).get("PermissionsBoundaryArn")}

    def profile_role(self, profile: str) -> str | None:
        try:
            roles = self.c("iam").get_instance_profile(InstanceProfileName=profile)["InstanceProfile"]["Roles"]
        except Exception:  # noqa: BLE001
            return None
        return roles[0]["RoleName"] if roles else None

    def managed_policy(self, arn: str) -> Any:
        with self._lock:
            if arn in self._managed:
                return self._managed[arn]
        iam = self.c("iam")
        try:
            version = iam.get_policy(PolicyArn=arn)["Policy"]["DefaultVersionId"]
            doc = iam.get_policy_version(PolicyArn=arn, VersionId=version)["PolicyVersion"]["Document"]
            if isinstance(doc, str):
                doc = json.loads(urllib.parse.unquote(doc))
        except Exception:  # noqa: BLE001
            doc = None
        with self._lock:
            self._managed[arn] = doc
        return doc


class Call:
    """One request on its way: parsed, with what had to be read before moto changes it."""

    def __init__(self, function: str, service: str, method: str, path: str, query: str,
                 headers: dict[str, str], body: bytes):
        self.function, self.service, self.method, self.path = function, service, method, path
        self.qs = {k: v[0] for k, v in urllib.parse.parse_qs(query, keep_blank_values=True).items()}
        self.params: dict[str, str] = {}
        self.json: Any = None
        self.operation = "?"
        target = next((v for k, v in headers.items() if k.lower() == "x-amz-target"), None)
        if service in ("ec2", "iam"):
            self.params = {k: v[0] for k, v in urllib.parse.parse_qs(body.decode("utf-8", "replace"),
                                                                      keep_blank_values=True).items()}
            self.operation = self.params.get("Action", "?")
        elif target:
            self.operation = target.rsplit(".", 1)[-1]
            try:
                self.json = json.loads(body or b"{}")
            except ValueError:
                self.json = {}
        elif service == "scheduler":
            self.json = json.loads(body) if body else {}
            self.operation = scheduler_operation(method, path, self.qs)
        elif service == "s3":
            self.operation = s3_operation(method, path, self.qs)
        self.before: dict[str, Any] = {}
        self.principal: str | None = None  # whose credentials signed it (Lookup.principal)


def s3_operation(method: str, path: str, qs: dict[str, str]) -> str:
    bucket_only = "/" not in path.strip("/")
    if bucket_only:
        if method == "GET" and "versions" in qs:
            return "ListObjectVersions"
        if method == "GET" and qs.get("list-type") == "2":
            return "ListObjectsV2"
        return f"{method} bucket"
    return {"GET": "GetObject", "HEAD": "HeadObject", "PUT": "PutObject", "DELETE": "DeleteObject"}.get(method, method)


def scheduler_operation(method: str, path: str, qs: dict[str, str]) -> str:
    parts = [urllib.parse.unquote(p) for p in path.strip("/").split("/")]
    kind = parts[0] if parts else ""
    one = len(parts) > 1
    if kind == "schedule-groups":
        return {"GET": "GetScheduleGroup" if one else "ListScheduleGroups", "POST": "CreateScheduleGroup",
                "DELETE": "DeleteScheduleGroup"}.get(method, method)
    if kind == "schedules":
        return {"GET": "GetSchedule" if one else "ListSchedules", "POST": "CreateSchedule",
                "PUT": "UpdateSchedule", "DELETE": "DeleteSchedule"}.get(method, method)
    if kind == "tags":
        return {"GET": "ListTagsForResource", "POST": "TagResource", "DELETE": "UntagResource"}.get(method, method)
    return f"{method} {kind}"


class Recorder:
    """Writes one JSON line per Lambda call to `path` (see the module's docstring)."""

    def __init__(self, path: str, lookup: Lookup, account: str = "123456789012",
                 region: str = "us-east-1", log: Callable[[str], None] = print):
        self.path, self.lookup, self.account, self.region, self._log = path, lookup, account, region, log
        self._lock = threading.Lock()
        self.count = 0
        self.unmapped = 0

    # -- ARNs ---------------------------------------------------------------------------------

    def ec2_arn(self, kind: str, rid: str) -> str:
        if kind in ("image", "snapshot"):
            return f"arn:aws:ec2:{self.region}::{kind}/{rid}"
        return f"arn:aws:ec2:{self.region}:{self.account}:{kind}/{rid}"

    def iam_arn(self, kind: str, name: str, path: str = INSTANCE_IAM_PATH) -> str:
        return f"arn:aws:iam::{self.account}:{kind}{path}{name}"

    def role_arn(self, name: str) -> str:
        found = self.lookup.role(name)
        return found["arn"] if found else self.iam_arn("role", name)

    # -- the hooks ----------------------------------------------------------------------------

    def before(self, method: str, path: str, query: str, headers: dict[str, str],
               body: bytes, instance: str | None = None) -> Call | None:
        """`instance`: the call came from that instance's guest (any client, the AWS CLI)."""
        function = f"instance:{instance}" if instance else function_of(headers)
        if function is None:
            return None
        key, service = signed_by(headers)
        call = Call(function, service or "?", method, path, query, headers, body)
        if not instance and key:
            call.principal = self.lookup.principal(key)
        try:
            pre = getattr(self, f"_pre_{call.service}_{call.operation}", None)
            if pre is not None:
                pre(call)
        except Exception as e:  # noqa: BLE001 - recorded as an error, never breaks the proxy
            call.before["error"] = repr(e)
        return call

    def after(self, call: Call | None, status: int, data: bytes) -> None:
        if call is None:
            return
        rec: dict[str, Any] = {"function": call.function, "service": call.service,
                               "operation": call.operation, "status": status,
                               "error": error_code(status, data), "auth": [], "facts": {}}
        if call.principal is not None:
            rec["principal"] = call.principal
        try:
            mapper = getattr(self, f"_map_{call.service}_{call.operation}", None)
            if mapper is None:
                raise UnmappedCall(f"{call.service} {call.operation} ({call.method} {call.path})")
            rec["auth"] = mapper(call, status, data, rec["facts"])
        except UnmappedCall as e:
            rec["unmapped"] = True
            rec["detail"] = str(e)
            self._log(f"iam-record: UNMAPPED call from {call.function}: {e}")
        except Exception as e:  # noqa: BLE001
            rec["unmapped"] = True
            rec["detail"] = f"mapping failed: {e!r}"
            self._log(f"iam-record: mapping {call.service} {call.operation} failed: {e!r}")
        if "error" in call.before:
            rec["unmapped"], rec["detail"] = True, f"reading state before the call failed: {call.before['error']}"
        line = json.dumps(rec, sort_keys=True)
        with self._lock:
            self.count += 1
            self.unmapped += bool(rec.get("unmapped"))
            with open(self.path, "a", encoding="utf-8") as f:
                f.write(line + "\n")

    # -- S3 -----------------------------------------------------------------------------------

    def _s3_object(self, call: Call, status, data, facts):
        bucket, _, key = call.path.lstrip("/").partition("/")
        key = urllib.parse.unquote(key)
        arn = f"arn:aws:s3:::{bucket}/{key}"
        version = call.qs.get("versionId")
        if version:
            return [{"action": "s3:GetObjectVersion", "resource": arn, "context": {"s3:VersionId": version}}]
        return [{"action": "s3:GetObject", "resource": arn, "context": {}}]

    _map_s3_GetObject = _s3_object
    _map_s3_HeadObject = _s3_object

    def _map_s3_ListObjectVersions(self, call, status, data, facts):
        bucket = call.path.strip("/")
        ctx = {"s3:prefix": call.qs["prefix"]} if "prefix" in call.qs else {}
        return [{"action": "s3:ListBucketVersions", "resource": f"arn:aws:s3:::{bucket}", "context": ctx}]

    # -- EC2 ----------------------------------------------------------------------------------

    def _star(action: str):  # noqa: N805 - a mapper factory used in the class body
        def mapper(self, call, status, data, facts):
            return [{"action": action, "resource": "*", "context": {}}]
        return mapper

    _map_ec2_DescribeImages = _star("ec2:DescribeImages")
    _map_ec2_DescribeInstances = _star("ec2:DescribeInstances")
    _map_ec2_DescribeVpcs = _star("ec2:DescribeVpcs")
    _map_ec2_DescribeSubnets = _star("ec2:DescribeSubnets")
    _map_ec2_DescribeInstanceConnectEndpoints = _star("ec2:DescribeInstanceConnectEndpoints")
    _map_ec2_DescribeSecurityGroups = _star("ec2:DescribeSecurityGroups")
    _map_ec2_DescribeLaunchTemplates = _star("ec2:DescribeLaunchTemplates")
    _map_ec2_DescribeLaunchTemplateVersions = _star("ec2:DescribeLaunchTemplateVersions")
    _map_scheduler_ListSchedules = _star("scheduler:ListSchedules")

    def _map_ec2_CreateSecurityGroup(self, call, status, data, facts):
        p = call.params
        tags = query_tags(p, "TagSpecification", "security-group")
        gid = next(iter(xml_find_all(data, "groupId")), "sg-00000000")
        out = created("ec2:CreateSecurityGroup", self.ec2_arn("security-group", gid), tags, "ec2:CreateTags")
        if p.get("VpcId"):
            out.insert(1, {"action": "ec2:CreateSecurityGroup", "resource": self.ec2_arn("vpc", p["VpcId"]), "context": {}})
        return out

    def _map_ec2_CreateInstanceConnectEndpoint(self, call, status, data, facts):
        """The endpoint (tagged on create), in its subnet with its groups, and the network
        interface EC2 creates for it with the caller's permissions (ec2:CreateNetworkInterface)."""
        p = call.params
        tags = query_tags(p, "TagSpecification", "instance-connect-endpoint")
        eid = next(iter(xml_find_all(data, "instanceConnectEndpointId")), "eice-00000000")
        groups = numbered(p, "SecurityGroupId")
        uses = [self.ec2_arn("subnet", p.get("SubnetId") or "subnet-00000000")] + \
            [self.ec2_arn("security-group", g) for g in groups]
        out = created("ec2:CreateInstanceConnectEndpoint",
                      self.ec2_arn("instance-connect-endpoint", eid), tags, "ec2:CreateTags")
        out += [{"action": "ec2:CreateInstanceConnectEndpoint", "resource": arn, "context": {}} for arn in uses]
        eni = next(iter(xml_set(data, "networkInterfaceIdSet")), None)
        out += [{"action": "ec2:CreateNetworkInterface", "resource": arn, "context": {}}
                for arn in uses + [self.ec2_arn("network-interface", eni or "eni-00000000")]]
        facts["endpoint"] = eid
        return out

    def _pre_ec2_AuthorizeSecurityGroupIngress(self, call):
        call.before["tags"] = self.lookup.security_group_tags(call.params["GroupId"])

    _pre_ec2_DeleteSecurityGroup = _pre_ec2_AuthorizeSecurityGroupIngress

    def _sg_write(action: str):  # noqa: N805
        def mapper(self, call, status, data, facts):
            return [{"action": action, "resource": self.ec2_arn("security-group", call.params["GroupId"]),
                     "context": resource_tag_context(call.before["tags"], ec2=True)}]
        return mapper

    _map_ec2_AuthorizeSecurityGroupIngress = _sg_write("ec2:AuthorizeSecurityGroupIngress")
    _map_ec2_DeleteSecurityGroup = _sg_write("ec2:DeleteSecurityGroup")

    @staticmethod
    def _user_data(b64: str | None) -> str | None:
        if not b64:
            return None
        try:
            return base64.b64decode(b64).decode("utf-8", "replace")
        except ValueError:
            return None

    def _template_facts(self, call, facts, lt_id):
        p = call.params
        facts.update({
            "launch_template_id": lt_id,
            "instance_tags": query_tags(p, "LaunchTemplateData.TagSpecification", "instance"),
            "profile": p.get("LaunchTemplateData.IamInstanceProfile.Name"),
            "user_data": self._user_data(p.get("LaunchTemplateData.UserData")),
        })

    def _map_ec2_CreateLaunchTemplate(self, call, status, data, facts):
        tags = query_tags(call.params, "TagSpecification", "launch-template")
        lt_id = next(iter(xml_find_all(data, "launchTemplateId")), "lt-00000000")
        self._template_facts(call, facts, lt_id)
        facts["tags"] = tags
        return created("ec2:CreateLaunchTemplate", self.ec2_arn("launch-template", lt_id), tags, "ec2:CreateTags")

    def _pre_ec2_CreateLaunchTemplateVersion(self, call):
        call.before["lt"] = self.lookup.launch_template(call.params.get("LaunchTemplateId"),
                                                        call.params.get("LaunchTemplateName"))

    _pre_ec2_DeleteLaunchTemplate = _pre_ec2_CreateLaunchTemplateVersion

    def _map_ec2_CreateLaunchTemplateVersion(self, call, status, data, facts):
        lt = call.before["lt"]
        self._template_facts(call, facts, lt["id"])
        facts["tags"] = lt["tags"]
        return [{"action": "ec2:CreateLaunchTemplateVersion", "resource": self.ec2_arn("launch-template", lt["id"]),
                 "context": resource_tag_context(lt["tags"], ec2=True)}]

    def _map_ec2_DeleteLaunchTemplate(self, call, status, data, facts):
        lt = call.before["lt"]
        return [{"action": "ec2:DeleteLaunchTemplate", "resource": self.ec2_arn("launch-template", lt["id"]),
                 "context": resource_tag_context(lt["tags"], ec2=True)}]

    def _pre_ec2_RunInstances(self, call):
        p = call.params
        call.before["lt"] = self.lookup.launch_template(p.get("LaunchTemplate.LaunchTemplateId"),
                                                        p.get("LaunchTemplate.LaunchTemplateName"))
        profile = p.get("IamInstanceProfile.Name") or \
            (call.before["lt"]["data"].get("IamInstanceProfile") or {}).get("Name")
        call.before["profile"] = profile
        call.before["profile_role"] = self.lookup.profile_role(profile) if profile else None

    def _map_ec2_RunInstances(self, call, status, data, facts):
        lt = call.before["lt"]
        lt_arn = self.ec2_arn("launch-template", lt["id"])
        via = {"ec2:LaunchTemplate": lt_arn}
        instances = (xml_find_all(data, "instanceId") if status == 200 else []) or ["i-00000000000000000"]
        facts.update({"instances": instances if status == 200 else [], "launch_template_id": lt["id"]})
        resources = {  # what the call creates or uses, by ARN kind
            "instance": instances,
            "volume": xml_find_all(data, "volumeId") or ["vol-00000000"],
            "network-interface": xml_find_all(data, "networkInterfaceId") or ["eni-00000000"],
            "security-group": xml_find_all(data, "groupId") or lt["data"].get("SecurityGroupIds") or ["sg-00000000"],
            "subnet": xml_find_all(data, "subnetId")[:1] or ["subnet-00000000"],
            "image": xml_find_all(data, "imageId")[:1] or [lt["data"].get("ImageId") or "ami-00000000"],
        }
        tags: dict[str, dict[str, str]] = {"instance": {}, "volume": {}}  # tagged on create: the template's, the call's
        for spec in lt["data"].get("TagSpecifications") or []:
            if spec["ResourceType"] in tags:
                tags[spec["ResourceType"]].update(Lookup._tags(spec.get("Tags")))
        for kind, kind_tags in tags.items():
            kind_tags.update(query_tags(call.params, "TagSpecification", kind))
        out = [{"action": "ec2:RunInstances", "resource": lt_arn,
                "context": {**via, **resource_tag_context(lt["tags"], ec2=True)}}]
        for kind, ids in resources.items():
            out += [{"action": "ec2:RunInstances", "resource": self.ec2_arn(kind, rid),
                     "context": {**via, **tag_context(tags.get(kind, {}))}} for rid in ids]
        for kind, kind_tags in tags.items():
            if kind_tags:
                out += [{"action": "ec2:CreateTags", "resource": self.ec2_arn(kind, rid),
                         "context": {"ec2:CreateAction": "RunInstances", **tag_context(kind_tags)}}
                        for rid in resources[kind]]
        profile, role = call.before.get("profile"), call.before.get("profile_role")
        if profile:
            out.append({"action": "iam:PassRole", "resource": self.role_arn(role) if role else self.iam_arn("role", profile),
                        "context": {"iam:PassedToService": "ec2.amazonaws.com"}})
        return out

    def _pre_instances(self, call):
        call.before["tags"] = self.lookup.instance_tags(numbered(call.params, "InstanceId"))

    _pre_ec2_TerminateInstances = _pre_instances
    _pre_ec2_StartInstances = _pre_instances
    _pre_ec2_StopInstances = _pre_instances

    def _instances_write(action: str):  # noqa: N805
        def mapper(self, call, status, data, facts):
            return [{"action": action, "resource": self.ec2_arn("instance", i),
                     "context": resource_tag_context(tags, ec2=True)}
                    for i, tags in call.before["tags"].items()]
        return mapper

    def _pre_ec2_CreateTags(self, call):
        call.before["tags"] = self.lookup.instance_tags([r for r in numbered(call.params, "ResourceId")
                                                         if r.startswith("i-")])

    def _map_ec2_CreateTags(self, call, status, data, facts):
        ids = numbered(call.params, "ResourceId")
        if any(not r.startswith("i-") for r in ids):
            raise UnmappedCall(f"ec2 CreateTags on {ids}: only instances are mapped")
        tags = pairs(call.params, "Tag")
        return [{"action": "ec2:CreateTags", "resource": self.ec2_arn("instance", i),
                 "context": {**resource_tag_context(call.before["tags"].get(i, {}), ec2=True), **tag_context(tags)}}
                for i in ids]

    _map_ec2_TerminateInstances = _instances_write("ec2:TerminateInstances")
    _map_ec2_StartInstances = _instances_write("ec2:StartInstances")
    _map_ec2_StopInstances = _instances_write("ec2:StopInstances")

    # -- IAM ----------------------------------------------------------------------------------

    def _pre_role(self, call):
        call.before["role"] = self.lookup.role(call.params["RoleName"])

    _pre_iam_GetRole = _pre_iam_PutRolePolicy = _pre_iam_AttachRolePolicy = _pre_role
    _pre_iam_DetachRolePolicy = _pre_iam_DeleteRolePolicy = _pre_iam_DeleteRole = _pre_role
    _pre_iam_PutRolePermissionsBoundary = _pre_role

    def _role(self, call, status, data) -> str:
        found = call.before.get("role")
        if found:
            return found["arn"]
        arn = next(iter(xml_find_all(data, "Arn")), None) if status == 200 else None
        return arn or self.iam_arn("role", call.params["RoleName"], call.params.get("Path", INSTANCE_IAM_PATH))

    def _boundary_ctx(self, call) -> dict[str, Any]:
        b = (call.before.get("role") or {}).get("boundary")
        return {"iam:PermissionsBoundary": b} if b else {}

    def _map_iam_GetRole(self, call, status, data, facts):
        return [{"action": "iam:GetRole", "resource": self._role(call, status, data), "context": self._boundary_ctx(call)}]

    def _map_iam_CreateRole(self, call, status, data, facts):
        p = call.params
        arn = self._role(call, status, data)
        tags = member_tags(p)
        boundary = p.get("PermissionsBoundary")
        facts.update({"role": p["RoleName"], "arn": arn, "tags": tags, "boundary": boundary})
        return created("iam:CreateRole", arn, tags, "iam:TagRole", {"iam:PermissionsBoundary": boundary} if boundary else None)

    def _map_iam_PutRolePolicy(self, call, status, data, facts):
        p = call.params
        facts.update({"role": p["RoleName"], "policy_name": p.get("PolicyName"),
                      "policy": json.loads(p.get("PolicyDocument") or "null")})
        return [{"action": "iam:PutRolePolicy", "resource": self._role(call, status, data), "context": self._boundary_ctx(call)}]

    def _map_iam_PutRolePermissionsBoundary(self, call, status, data, facts):
        return [{"action": "iam:PutRolePermissionsBoundary", "resource": self._role(call, status, data),
                 "context": {"iam:PermissionsBoundary": call.params["PermissionsBoundary"]}}]

    def _map_iam_AttachRolePolicy(self, call, status, data, facts):
        p = call.params
        facts.update({"role": p["RoleName"], "policy_arn": p["PolicyArn"],
                      "policy": self.lookup.managed_policy(p["PolicyArn"])})
        return [{"action": "iam:AttachRolePolicy", "resource": self._role(call, status, data),
                 "context": {"iam:PolicyARN": p["PolicyArn"], **self._boundary_ctx(call)}}]

    def _map_iam_DetachRolePolicy(self, call, status, data, facts):
        return [{"action": "iam:DetachRolePolicy", "resource": self._role(call, status, data),
                 "context": {"iam:PolicyARN": call.params["PolicyArn"], **self._boundary_ctx(call)}}]

    def _map_iam_DeleteRolePolicy(self, call, status, data, facts):
        return [{"action": "iam:DeleteRolePolicy", "resource": self._role(call, status, data), "context": self._boundary_ctx(call)}]

    def _map_iam_DeleteRole(self, call, status, data, facts):
        return [{"action": "iam:DeleteRole", "resource": self._role(call, status, data), "context": self._boundary_ctx(call)}]

    def _profile(self, call) -> str:
        return self.iam_arn("instance-profile", call.params["InstanceProfileName"], call.params.get("Path", INSTANCE_IAM_PATH))

    def _map_iam_GetInstanceProfile(self, call, status, data, facts):
        return [{"action": "iam:GetInstanceProfile", "resource": self._profile(call), "context": {}}]

    def _map_iam_CreateInstanceProfile(self, call, status, data, facts):
        return created("iam:CreateInstanceProfile", self._profile(call), member_tags(call.params), "iam:TagInstanceProfile")

    def _map_iam_AddRoleToInstanceProfile(self, call, status, data, facts):
        facts.update({"profile": call.params["InstanceProfileName"], "role": call.params["RoleName"]})
        return [{"action": "iam:AddRoleToInstanceProfile", "resource": self._profile(call), "context": {}},
                {"action": "iam:PassRole", "resource": self.role_arn(call.params["RoleName"]),
                 "context": {"iam:PassedToService": "ec2.amazonaws.com"}}]

    def _map_iam_RemoveRoleFromInstanceProfile(self, call, status, data, facts):
        return [{"action": "iam:RemoveRoleFromInstanceProfile", "resource": self._profile(call), "context": {}}]

    def _map_iam_DeleteInstanceProfile(self, call, status, data, facts):
        return [{"action": "iam:DeleteInstanceProfile", "resource": self._profile(call), "context": {}}]

    # -- SSM, DynamoDB, Logs, EventBridge ----------------------------------------------------------

    def parameter_arn(self, name: str) -> str:
        if name.startswith("arn:"):
            return name
        if name.startswith("/aws/service/"):
            return f"arn:aws:ssm:{self.region}::parameter/{name.lstrip('/')}"
        return f"arn:aws:ssm:{self.region}:{self.account}:parameter/{name.lstrip('/')}"

    def _map_ssm_GetParameter(self, call, status, data, facts):
        return [{"action": "ssm:GetParameter", "resource": self.parameter_arn(secret_name(call.json["Name"])),
                 "context": {}}]

    def _ddb(action: str):  # noqa: N805
        def mapper(self, call, status, data, facts):
            table = call.json["TableName"]
            ctx = {}
            key = call.json.get("Key") or call.json.get("Item") or {}
            pk = (key.get("pk") or {}).get("S")
            if action == "dynamodb:Query":
                values = call.json.get("ExpressionAttributeValues") or {}
                pk = next((v.get("S") for v in values.values() if "S" in v), None)
            if pk is not None:
                ctx["dynamodb:LeadingKeys"] = [pk]
            return [{"action": action, "resource": f"arn:aws:dynamodb:{self.region}:{self.account}:table/{table}",
                     "context": ctx}]
        return mapper

    _map_dynamodb_GetItem = _ddb("dynamodb:GetItem")
    _map_dynamodb_PutItem = _ddb("dynamodb:PutItem")
    _map_dynamodb_UpdateItem = _ddb("dynamodb:UpdateItem")
    _map_dynamodb_DeleteItem = _ddb("dynamodb:DeleteItem")
    _map_dynamodb_Query = _ddb("dynamodb:Query")

    def log_group_arn(self, group: str) -> str:
        return f"arn:aws:logs:{self.region}:{self.account}:log-group:{group}"

    def _map_logs_CreateLogGroup(self, call, status, data, facts):
        return created("logs:CreateLogGroup", self.log_group_arn(call.json["logGroupName"]),
                       call.json.get("tags") or {}, "logs:TagResource")

    def _map_logs_PutRetentionPolicy(self, call, status, data, facts):
        return [{"action": "logs:PutRetentionPolicy", "resource": self.log_group_arn(call.json["logGroupName"]), "context": {}}]

    def _log_stream(action: str):  # noqa: N805
        def mapper(self, call, status, data, facts):
            arn = f"{self.log_group_arn(call.json['logGroupName'])}:log-stream:{call.json['logStreamName']}"
            return [{"action": action, "resource": arn, "context": {}}]
        return mapper

    _map_logs_GetLogEvents = _log_stream("logs:GetLogEvents")
    _map_logs_CreateLogStream = _log_stream("logs:CreateLogStream")
    _map_logs_PutLogEvents = _log_stream("logs:PutLogEvents")

    def _map_ssm_GetParameters(self, call, status, data, facts):
        return [{"action": "ssm:GetParameters", "resource": self.parameter_arn(secret_name(n)), "context": {}}
                for n in call.json.get("Names") or []]

    def _map_events_PutEvents(self, call, status, data, facts):
        entries = call.json.get("Entries") or []
        buses = {e.get("EventBusName") or "default" for e in entries} or {"default"}
        out = []
        for bus in sorted(buses):
            mine = [e for e in entries if (e.get("EventBusName") or "default") == bus]
            ctx: dict[str, Any] = {"events:source": [e.get("Source") for e in mine if e.get("Source")],
                                   "events:detail-type": [e.get("DetailType") for e in mine if e.get("DetailType")]}
            arn = bus if bus.startswith("arn:") else f"arn:aws:events:{self.region}:{self.account}:event-bus/{bus}"
            out.append({"action": "events:PutEvents", "resource": arn, "context": {k: v for k, v in ctx.items() if v}})
        return out

    # -- EventBridge Scheduler ------------------------------------------------------------------

    def _name(self, call) -> str:
        return urllib.parse.unquote(call.path.strip("/").split("/", 1)[1])

    def group_arn(self, group: str) -> str:
        return f"arn:aws:scheduler:{self.region}:{self.account}:schedule-group/{group}"

    def schedule_arn(self, call) -> str:
        group = (call.json or {}).get("GroupName") or call.qs.get("groupName") or "default"
        return f"arn:aws:scheduler:{self.region}:{self.account}:schedule/{group}/{self._name(call)}"

    def _map_scheduler_GetScheduleGroup(self, call, status, data, facts):
        return [{"action": "scheduler:GetScheduleGroup", "resource": self.group_arn(self._name(call)), "context": {}}]

    def _map_scheduler_DeleteScheduleGroup(self, call, status, data, facts):
        return [{"action": "scheduler:DeleteScheduleGroup", "resource": self.group_arn(self._name(call)), "context": {}}]

    def _map_scheduler_CreateScheduleGroup(self, call, status, data, facts):
        tags = {t["Key"]: t["Value"] for t in (call.json or {}).get("Tags") or []}
        return created("scheduler:CreateScheduleGroup", self.group_arn(self._name(call)), tags, "scheduler:TagResource")

    def _map_scheduler_ListTagsForResource(self, call, status, data, facts):
        return [{"action": "scheduler:ListTagsForResource", "resource": self._name(call), "context": {}}]

    def _map_scheduler_TagResource(self, call, status, data, facts):
        tags = {t["Key"]: t["Value"] for t in (call.json or {}).get("Tags") or []}
        return [{"action": "scheduler:TagResource", "resource": self._name(call), "context": tag_context(tags)}]

    def _schedule(action: str, passes: bool):  # noqa: N805
        def mapper(self, call, status, data, facts):
            out = [{"action": action, "resource": self.schedule_arn(call), "context": {}}]
            target = (call.json or {}).get("Target") or {}
            role = target.get("RoleArn")
            if target:  # what EventBridge Scheduler will do with the role
                facts.update({"target": target.get("Arn"), "role": role})
            if passes and role:
                out.append({"action": "iam:PassRole", "resource": role,
                            "context": {"iam:PassedToService": "scheduler.amazonaws.com"}})
            return out
        return mapper

    _map_scheduler_GetSchedule = _schedule("scheduler:GetSchedule", False)
    _map_scheduler_DeleteSchedule = _schedule("scheduler:DeleteSchedule", False)
    _map_scheduler_CreateSchedule = _schedule("scheduler:CreateSchedule", True)
    _map_scheduler_UpdateSchedule = _schedule("scheduler:UpdateSchedule", True)


def secret_name(reference: str) -> str:
    """A parameter's name or ARN without its :version / :label selector."""
    if reference.startswith("arn:"):
        head, _, rest = reference.partition(":parameter/")
        return f"{head}:parameter/{rest.split(':', 1)[0]}"
    return reference.split(":", 1)[0]


def error_code(status: int, data: bytes) -> str | None:
    if status < 300:
        return None
    codes = xml_find_all(data, "Code")
    if codes:
        return codes[0]
    try:
        body = json.loads(data or b"{}")
        return str(body.get("__type") or body.get("code") or body.get("Code") or status).rsplit("#", 1)[-1]
    except ValueError:
        return str(status)

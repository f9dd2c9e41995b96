"""The deploy template (infra/template.yaml), resolved with the local environment's names.

The local control plane is made from it (dev.py: the state table, the permissions boundary,
every role with its policies, the state machines from their DefinitionUri with their
substitutions, each function's environment, timeout and memory; the bridge's rules, rules.py),
and the IAM check evaluates
calls against its policies (iam_check.py): a change to the template is exercised by every test.

CloudFormation's short tags (!Ref, !Sub, !GetAtt, ...) are read by a SafeLoader; Ref, GetAtt,
Sub, If, Join, Equals/Not/And/Or are resolved with the parameters' defaults (or the given ones).
A resource without a name property is named ``{Prefix}-{LogicalId}`` (CloudFormation would
add a random suffix), except the few in LOCAL_NAMES.
"""

from __future__ import annotations

import os
import re
from typing import Any

import yaml

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.abspath(os.path.join(HERE, "..", ".."))
TEMPLATE = os.path.join(ROOT, "infra", "template.yaml")
ACCOUNT = "123456789012"
REGION = "us-east-1"
BUCKET = "stackdrop-bundles"  # the bundle bucket (stackdrop_local.Config.bucket)
BOUNDARY_NAME = "stackdrop-instance-boundary"
SCHEDULER_ROLE = "stackdrop-scheduler"
# The local environment's physical names for what the template names: the rest follows from
# the template's own name properties.
LOCAL_NAMES = {
    "BundleBucket": BUCKET,
    "InstanceBoundary": f"arn:aws:iam::{ACCOUNT}:policy/{BOUNDARY_NAME}",
    "SchedulerRole": SCHEDULER_ROLE,
}

# What Step Functions needs of a machine's role to deliver its logs to CloudWatch Logs (AWS's
# documented list: Step Functions developer guide, "IAM policies for logging to CloudWatch Logs").
STATES_LOG_DELIVERY = ["logs:CreateLogDelivery", "logs:GetLogDelivery", "logs:UpdateLogDelivery",
                       "logs:DeleteLogDelivery", "logs:ListLogDeliveries", "logs:PutResourcePolicy",
                       "logs:DescribeResourcePolicies", "logs:DescribeLogGroups"]


class _Loader(yaml.SafeLoader):
    pass


def _tag(loader: yaml.Loader, suffix: str, node: yaml.Node) -> dict[str, Any]:
    name = "Ref" if suffix == "Ref" else f"Fn::{suffix}"
    if isinstance(node, yaml.ScalarNode):
        value: Any = loader.construct_scalar(node)
        if suffix == "GetAtt":
            value = value.split(".", 1)
    elif isinstance(node, yaml.SequenceNode):
        value = loader.construct_sequence(node, deep=True)
    else:
        value = loader.construct_mapping(node, deep=True)
    return {name: value}


_Loader.add_multi_constructor("!", _tag)


def load_template(path: str = TEMPLATE) -> dict[str, Any]:
    with open(path, encoding="utf-8") as f:
        return yaml.load(f, Loader=_Loader)  # noqa: S506 - SafeLoader plus the CFN tags


NO_VALUE = object()


class Resolver:
    """Ref, Fn::GetAtt, Fn::Sub, Fn::If, Fn::Join, Fn::Equals/Not/And/Or on one template, with
    the parameters' defaults (or `parameters`) and the local environment's names."""

    NAME_PROPS = ("FunctionName", "TableName", "LogGroupName", "QueueName", "Name", "BucketName", "RoleName")

    def __init__(self, template: dict[str, Any], parameters: dict[str, Any] | None = None,
                 names: dict[str, str] | None = None):
        self.t = template
        self.resources = template.get("Resources", {})
        self.params: dict[str, Any] = {}
        for k, p in template.get("Parameters", {}).items():
            v = (parameters or {}).get(k, p.get("Default"))
            if p.get("Type") == "CommaDelimitedList" and isinstance(v, str):
                v = [s.strip() for s in v.split(",")]
            self.params[k] = v
        self.params.update({"AWS::Region": REGION, "AWS::AccountId": ACCOUNT, "AWS::Partition": "aws",
                            "AWS::StackName": "stackdrop", "AWS::URLSuffix": "amazonaws.com"})
        self.names = {**LOCAL_NAMES, **(names or {})}
        self.conditions = {k: self.value(v) for k, v in template.get("Conditions", {}).items()}

    def physical(self, logical: str) -> str:
        if logical in self.names:
            return self.names[logical]
        props = self.resources[logical].get("Properties", {})
        for p in self.NAME_PROPS:
            if p in props:
                v = self.value(props[p])
                if v is not NO_VALUE and v:
                    return v
        return f"{self.params.get('Prefix') or 'stackdrop'}-{logical}"

    def ref(self, name: str) -> Any:
        if name == "AWS::NoValue":
            return NO_VALUE
        if name in self.params:
            return self.params[name]
        kind = self.resources[name]["Type"]
        phys = self.physical(name)
        if kind in ("AWS::Serverless::StateMachine", "AWS::StepFunctions::StateMachine"):
            return f"arn:aws:states:{REGION}:{ACCOUNT}:stateMachine:{phys}"
        if kind == "AWS::SQS::Queue":
            return f"https://sqs.{REGION}.amazonaws.com/{ACCOUNT}/{phys}"
        return phys

    def getatt(self, name: str, attr: str) -> str:
        kind = self.resources[name]["Type"]
        phys = self.physical(name)
        if attr != "Arn":
            raise ValueError(f"Fn::GetAtt {name}.{attr}: only Arn is resolved")
        return {
            "AWS::S3::Bucket": f"arn:aws:s3:::{phys}",
            "AWS::DynamoDB::Table": f"arn:aws:dynamodb:{REGION}:{ACCOUNT}:table/{phys}",
            "AWS::Logs::LogGroup": f"arn:aws:logs:{REGION}:{ACCOUNT}:log-group:{phys}:*",
            "AWS::Serverless::Function": f"arn:aws:lambda:{REGION}:{ACCOUNT}:function:{phys}",
            "AWS::IAM::Role": f"arn:aws:iam::{ACCOUNT}:role/{phys}",
            "AWS::SQS::Queue": f"arn:aws:sqs:{REGION}:{ACCOUNT}:{phys}",
            "AWS::Events::Rule": f"arn:aws:events:{REGION}:{ACCOUNT}:rule/{phys}",
        }[kind]

    def sub(self, text: str, local: dict[str, Any]) -> str:
        def one(m: re.Match) -> str:
            expr = m.group(1)
            if expr.startswith("!"):
                return "${" + expr[1:] + "}"
            if expr in local:
                return str(self.value(local[expr]))
            if "." in expr and not expr.startswith("AWS::"):
                return self.getatt(*expr.split(".", 1))
            return str(self.ref(expr))
        return re.sub(r"\$\{([^}]+)\}", one, text)

    def value(self, v: Any) -> Any:
        if isinstance(v, list):
            return [x for x in (self.value(i) for i in v) if x is not NO_VALUE]
        if not isinstance(v, dict):
            return v
        if len(v) == 1:
            (k, a), = v.items()
            if k == "Ref":
                return self.ref(a)
            if k == "Fn::GetAtt":
                return self.getatt(*(a if isinstance(a, list) else a.split(".", 1)))
            if k == "Fn::Sub":
                return self.sub(a, {}) if isinstance(a, str) else self.sub(a[0], a[1])
            if k == "Fn::If":
                return self.value(a[1] if self.conditions[a[0]] else a[2])
            if k == "Fn::Join":
                return a[0].join(str(x) for x in self.value(a[1]))
            if k == "Fn::Equals":
                x, y = self.value(a)
                return str(x) == str(y)
            if k == "Fn::Not":
                return not self.value(a[0])
            if k == "Fn::And":
                return all(self.value(a))
            if k == "Fn::Or":
                return any(self.value(a))
            if k == "Condition":
                return self.conditions[a]
        return {k: x for k, x in ((k, self.value(x)) for k, x in v.items()) if x is not NO_VALUE}


class Template:
    """The functions, their roles' policies and the instance boundary, resolved; and what the
    local control plane is made of (table, roles, state machines, each function's settings)."""

    def __init__(self, path: str = TEMPLATE, parameters: dict[str, Any] | None = None,
                 doc: dict[str, Any] | None = None, names: dict[str, str] | None = None):
        self.path = path
        self.doc = doc if doc is not None else load_template(path)
        self.r = Resolver(self.doc, parameters, names)
        self._policies: dict[str, list[dict[str, Any]]] = {}
        self._boundary: dict[str, Any] | None = None

    def functions(self) -> dict[str, dict[str, Any]]:
        """Function name -> {"logical", "role", "log_group"}."""
        out = {}
        for logical, res in self.r.resources.items():
            if res["Type"] != "AWS::Serverless::Function":
                continue
            props = res["Properties"]
            role = props["Role"]["Fn::GetAtt"][0]
            group = (props.get("LoggingConfig") or {}).get("LogGroup")
            out[self.r.physical(logical)] = {
                "logical": logical, "role": role,
                "log_group": self.r.value(group) if group else f"/aws/lambda/{self.r.physical(logical)}",
            }
        return out

    def role_policies(self, role: str) -> list[dict[str, Any]]:
        """Resolved once per role (every call of its function is checked against them)."""
        if role not in self._policies:
            props = self.r.resources[role]["Properties"]
            self._policies[role] = [{"name": f"{role}/{p['PolicyName']}", "policy": self.r.value(p["PolicyDocument"])}
                                    for p in props.get("Policies", [])]
        return self._policies[role]

    def role_of_arn(self, arn: str) -> str | None:
        """The template's role (logical id) whose resolved ARN this is."""
        return next((k for k, r in self.r.resources.items()
                     if r["Type"] == "AWS::IAM::Role" and self.r.getatt(k, "Arn") == arn), None)

    def service_calls(self) -> list[tuple[str, dict[str, Any], str]]:
        """What AWS services do with the template's other roles: each state machine invokes
        the functions its definition names, each rule starts its targets."""
        out = []
        for logical, res in self.r.resources.items():
            props = res.get("Properties", {})
            if res["Type"] == "AWS::Serverless::StateMachine":
                role = props["Role"]["Fn::GetAtt"][0]
                subs = self.r.value(props.get("DefinitionSubstitutions", {}))
                text = self._read_beside(props["DefinitionUri"])
                for name in sorted(set(re.findall(r'"Resource":\s*"\$\{(\w+)\}"', text))):
                    if name not in subs:
                        raise ValueError(f"{logical}: {props['DefinitionUri']} names ${{{name}}}, which its "
                                         "DefinitionSubstitutions lack")
                    out.append((role, {"action": "lambda:InvokeFunction", "resource": subs[name], "context": {}},
                                f"{logical} invokes {name}"))
                if props.get("Logging"):
                    for action in STATES_LOG_DELIVERY:
                        out.append((role, {"action": action, "resource": "*", "context": {}},
                                    f"{logical} delivers its logs"))
            elif res["Type"] == "AWS::Events::Rule":
                for target in props.get("Targets", []):
                    role = target["RoleArn"]["Fn::GetAtt"][0]
                    out.append((role, {"action": "states:StartExecution", "resource": self.r.value(target["Arn"]),
                                       "context": {}}, f"{logical} starts its target"))
        return out

    def boundary(self) -> dict[str, Any]:
        if self._boundary is None:
            res = self.r.resources["InstanceBoundary"]["Properties"]["PolicyDocument"]
            self._boundary = {"name": "InstanceBoundary", "policy": self.r.value(res)}
        return self._boundary

    # -- the local control plane ------------------------------------------------------------

    def _read_beside(self, relative: str) -> str:
        with open(os.path.join(os.path.dirname(self.path), relative), encoding="utf-8") as f:
            return f.read()

    def _of_type(self, *kinds: str) -> list[tuple[str, dict[str, Any]]]:
        return [(k, r.get("Properties", {})) for k, r in self.r.resources.items() if r["Type"] in kinds]

    def table(self) -> dict[str, Any]:
        """CreateTable's arguments for the template's one table."""
        (_, props), = self._of_type("AWS::DynamoDB::Table")
        p = self.r.value(props)
        return {k: p[k] for k in ("TableName", "BillingMode", "AttributeDefinitions", "KeySchema",
                                  "GlobalSecondaryIndexes") if k in p}

    def roles(self) -> list[dict[str, Any]]:
        """Every role: name, trust policy, inline policies (name -> document), managed ARNs."""
        out = []
        for logical, props in self._of_type("AWS::IAM::Role"):
            out.append({
                "logical": logical, "name": self.r.physical(logical),
                "trust": self.r.value(props["AssumeRolePolicyDocument"]),
                "policies": {p["PolicyName"]: p["policy"] for p in
                             ({"PolicyName": x["name"].split("/", 1)[1], "policy": x["policy"]}
                              for x in self.role_policies(logical))},
                "managed": self.r.value(props.get("ManagedPolicyArns", [])),
            })
        return out

    def state_machines(self) -> list[dict[str, Any]]:
        """Each machine: name, type, role (logical), definition (its DefinitionUri's text with
        its DefinitionSubstitutions made, as CloudFormation makes them)."""
        out = []
        for logical, props in self._of_type("AWS::Serverless::StateMachine"):
            text = self._read_beside(props["DefinitionUri"])
            for key, value in self.r.value(props.get("DefinitionSubstitutions", {})).items():
                text = text.replace("${" + key + "}", str(value))
            out.append({"logical": logical, "name": self.r.physical(logical),
                        "type": props.get("Type", "STANDARD"),
                        "role": props["Role"]["Fn::GetAtt"][0], "definition": text})
        return out

    def function_settings(self) -> dict[str, dict[str, Any]]:
        """Function name -> binary (the cargo package its CodeUri's zip is built from), role
        (logical), timeout and memory (seconds, MB), environment (Globals + its own)."""
        glob = self.doc.get("Globals", {}).get("Function", {})
        base_env = self.r.value((glob.get("Environment") or {}).get("Variables", {}))
        out = {}
        for logical, props in self._of_type("AWS::Serverless::Function"):
            code = props["CodeUri"]  # ../target/lambda/<binary>/bootstrap.zip
            env = {**base_env, **self.r.value((props.get("Environment") or {}).get("Variables", {}))}
            out[self.r.physical(logical)] = {
                "logical": logical, "binary": os.path.basename(os.path.dirname(code)),
                "role": props["Role"]["Fn::GetAtt"][0],
                "timeout": int(props.get("Timeout", glob.get("Timeout", 3))),
                "memory": int(props.get("MemorySize", glob.get("MemorySize", 128))),
                "environment": {k: str(v) for k, v in env.items()},
            }
        return out

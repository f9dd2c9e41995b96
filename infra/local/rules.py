"""The EventBridge rules of infra/template.yaml, as the local bridge applies them.

In AWS, the template's rules match the bundle bucket's S3 events and start their Step Functions
targets. moto's EventBridge has no Step Functions target, so the local environment routes every
event of the bucket to a queue and its bridge applies these rules itself: each rule's own
pattern (from the template, the bucket's name resolved; evaluated by moto's EventBridge pattern
engine, the one moto applies to its own rules: exact values, prefix, anything-but, exists,
numeric, $or) decides, and each of its state machine targets is started. A change to a rule's
pattern in the template changes what the local environment starts.
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any

from moto.events.models import EventPattern

import template as tpl


@dataclasses.dataclass
class Rule:
    name: str
    pattern: dict[str, Any]
    state: str = "ENABLED"
    description: str = ""
    # Step Functions targets: (target id, state machine ARN, role ARN).
    targets: list[tuple[str, str, str]] = dataclasses.field(default_factory=list)

    def __post_init__(self) -> None:
        self._engine = EventPattern.load(json.dumps(self.pattern))

    def matches(self, event: dict[str, Any]) -> bool:
        return self.state == "ENABLED" and self._engine.matches_event(event)

    def machines(self) -> list[str]:
        """The names of the state machines it starts."""
        return [arn.rsplit(":", 1)[-1] for _, arn, _ in self.targets if ":states:" in arn]


def from_template(path: str = tpl.TEMPLATE, bucket: str = tpl.BUCKET) -> list[Rule]:
    """The template's AWS::Events::Rule resources, resolved with the local names."""
    t = tpl.Template(path, names={"BundleBucket": bucket})
    out = []
    for logical, props in t.r.resources.items():
        if props["Type"] != "AWS::Events::Rule":
            continue
        p = t.r.value(props["Properties"])
        out.append(Rule(name=p.get("Name") or t.r.physical(logical), pattern=p["EventPattern"],
                        state=p.get("State", "ENABLED"), description=p.get("Description", ""),
                        targets=[(x["Id"], x["Arn"], x.get("RoleArn", "")) for x in p.get("Targets", [])]))
    if not out:
        raise ValueError(f"{path}: no AWS::Events::Rule: nothing would start a deploy")
    return out


def machines_for(rules: list[Rule], event: dict[str, Any]) -> list[tuple[str, str]]:
    """(rule name, state machine name) for each target of each rule the event matches."""
    return [(r.name, m) for r in rules if r.matches(event) for m in r.machines()]

"""Instances without guests: what stands in for their bootstrap.

Without real guests (``--no-guests``, or a host that cannot run them), an instance exists in moto
only and nothing runs its user data, so nothing would ever report the bootstrap's outcome and every
deploy would wait for its deadline. The stand-in writes what a bootstrap that succeeded writes on
its instance, the tag ``stackdrop:bootstrap=ok``, a moment after RunInstances answered, on every
instance whose user data is stackdrop's bootstrap. The environment says so when it starts: in this
mode a deploy proves the control plane only, never that an app runs.
"""

from __future__ import annotations

import base64
import threading
import time
from typing import Any, Callable

from guests.manager import parse_ec2_call

TAG = "stackdrop:bootstrap"
MARKER = b"SD_DEPLOYMENT="  # a variable every stackdrop bootstrap sets (functions/core/src/userdata.rs)


def is_stackdrop_bootstrap(user_data_b64: str | None) -> bool:
    if not user_data_b64:
        return False
    try:
        return MARKER in base64.b64decode(user_data_b64)
    except ValueError:
        return False


class BootstrapStandIn:
    """Reports ``ok`` for each launched instance that runs stackdrop's bootstrap (see above)."""

    def __init__(self, ec2: Callable[[], Any], log: Callable[[str], None], delay: float = 1.0):
        self._ec2 = ec2  # a client of moto itself (the tag is the instance's own call, not a Lambda's)
        self._log = log
        self.delay = delay
        self.reported: list[str] = []

    def on_moto_response(self, method: str, path: str, query: str, body: bytes, status: int,
                         data: bytes) -> None:
        call = parse_ec2_call(method, path, query, body, status, data)
        if call is not None and call[0] == "run":
            threading.Thread(target=self._report, args=(call[2],), daemon=True,
                             name="bootstrap-stand-in").start()

    def _report(self, ids: list[str]) -> None:
        time.sleep(self.delay)
        try:
            ec2 = self._ec2()
            ours = [i for i in ids if is_stackdrop_bootstrap(ec2.describe_instance_attribute(
                InstanceId=i, Attribute="userData").get("UserData", {}).get("Value"))]
            if ours:
                ec2.create_tags(Resources=ours, Tags=[{"Key": TAG, "Value": "ok"}])
                self.reported.extend(ours)
        except Exception as e:  # noqa: BLE001 - an instance terminated at once, moto stopping
            self._log(f"no guests: could not tag {ids} {TAG}=ok: {e!r}")

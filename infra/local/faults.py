"""Faults the local AWS injects on purpose, from a seed: what real AWS does now and then.

* ``duplicate``: the bridge delivers an S3 event twice (EventBridge delivers at least once).
* ``lambda_timeout``: a Lambda runs to completion, then Step Functions is told it timed out
  (``Sandbox.Timedout``), so the step runs again after its side effects.
* ``throttle``: an AWS call from a Lambda is refused with the service's throttling error before
  it reaches moto (no side effect); the SDK retries, then the step's Retry does.
* ``error``: the same with an HTTP 503.
* ``delay``: an AWS call from a Lambda waits up to ``max_delay`` seconds before it is served.
* ``s3_read_error``: a ranged S3 GET (the validator reading a bundle) answered with a 503, as S3
  does under load.
* ``instance_download_error``: an instance's download of its bundle version (a guest's GET of an
  object version) refused with 403 AccessDenied, as when its role may not read that version.
* ``instance_logs_answer_lost``: an instance's PutLogEvents (its log shipper's) reaches CloudWatch
  and is taken, then its answer is replaced by a 503: a retry after the side effect. With the one
  above, the faults on the instances' own calls (they need guests).

Plus EC2's published API request token buckets (``Ec2Buckets``): RunInstances and the other
mutating actions each have a bucket that refills at a fixed rate; a call that finds its bucket
empty gets ``RequestLimitExceeded``, as in a real account.

A spec is ``"duplicate=0.3,lambda_timeout=0.1,throttle=0.05"`` (probabilities per event or
call); ``"s3_read_error=#4"`` injects a fault into exactly the first 4 calls it applies to. Decisions come from one seeded ``random.Random``, so a seed replays the same sequence of
decisions (the interleaving of threads still varies).
"""

from __future__ import annotations

import dataclasses
import random
import threading
import time
import urllib.parse

KINDS = ("duplicate", "lambda_timeout", "throttle", "error", "delay", "s3_read_error",
         "instance_download_error", "instance_logs_answer_lost")

# EC2's documented request token buckets (bucket size, refill per second), per action class.
EC2_BUCKETS = {
    "RunInstances": (1000, 2.0),
    "TerminateInstances": (1000, 20.0),
    "StartInstances": (1000, 2.0),
    "StopInstances": (1000, 20.0),
    "mutating": (200, 5.0),
    "describe": (100, 20.0),
}
EC2_MUTATING_PREFIXES = ("Create", "Delete", "Modify", "Authorize", "Revoke", "Associate",
                         "Disassociate", "Attach", "Detach", "Replace", "Reboot")


def parse_spec(spec: str) -> dict[str, float]:
    """``"duplicate=0.3,throttle=0.05"`` -> {"duplicate": 0.3, "throttle": 0.05}. ``#N`` (the
    first N calls) becomes -N."""
    rates: dict[str, float] = {}
    for part in filter(None, (p.strip() for p in (spec or "").split(","))):
        name, _, value = part.partition("=")
        name = name.strip()
        if name not in KINDS:
            raise ValueError(f"unknown fault {name!r} (known: {', '.join(KINDS)})")
        if value.strip().startswith("#") and value.strip()[1:].isdigit():
            rates[name] = -float(value.strip()[1:])
            continue
        try:
            rate = float(value)
        except ValueError:
            raise ValueError(f"fault {name}: {value!r} is not a probability nor #count") from None
        if not 0.0 <= rate <= 1.0:
            raise ValueError(f"fault {name}: {rate} is not between 0 and 1")
        rates[name] = rate
    return rates


@dataclasses.dataclass
class Faults:
    rates: dict[str, float] = dataclasses.field(default_factory=dict)
    seed: int = 0
    max_delay: float = 2.0

    def __post_init__(self) -> None:
        self._rng = random.Random(self.seed)
        self._lock = threading.Lock()
        self.injected: dict[str, int] = {k: 0 for k in KINDS}

    @classmethod
    def from_spec(cls, spec: str, seed: int = 0) -> "Faults":
        return cls(parse_spec(spec), seed)

    def should(self, kind: str) -> bool:
        rate = self.rates.get(kind, 0.0)
        if rate < 0.0:  # the first N calls
            with self._lock:
                if self.injected[kind] >= -rate:
                    return False
                self.injected[kind] += 1
                return True
        if rate == 0.0:
            return False
        with self._lock:
            hit = self._rng.random() < rate
            if hit:
                self.injected[kind] += 1
        return hit

    def delay_seconds(self) -> float:
        if not self.should("delay"):
            return 0.0
        with self._lock:
            return self._rng.uniform(0.0, self.max_delay)

    def describe(self) -> dict:
        return {"rates": dict(self.rates), "seed": self.seed, "injected": dict(self.injected)}


class TokenBucket:
    def __init__(self, size: float, refill: float, clock=time.monotonic) -> None:
        self.size, self.refill, self.clock = size, refill, clock
        self.tokens = size
        self.at = clock()
        self.lock = threading.Lock()

    def take(self) -> bool:
        with self.lock:
            now = self.clock()
            self.tokens = min(self.size, self.tokens + (now - self.at) * self.refill)
            self.at = now
            if self.tokens >= 1.0:
                self.tokens -= 1.0
                return True
            return False


def ec2_bucket_name(action: str) -> str:
    if action in EC2_BUCKETS:
        return action
    if action.startswith(("Describe", "Get", "List")):
        return "describe"
    if action.startswith(EC2_MUTATING_PREFIXES):
        return "mutating"
    return "describe"


class Ec2Buckets:
    """One bucket per action class, as EC2 meters an account."""

    def __init__(self, buckets: dict[str, tuple[float, float]] | None = None,
                 clock=time.monotonic) -> None:
        self.buckets = {k: TokenBucket(size, rate, clock)
                        for k, (size, rate) in (buckets or EC2_BUCKETS).items()}
        self.refused = 0

    def admit(self, action: str) -> bool:
        ok = self.buckets[ec2_bucket_name(action)].take()
        if not ok:
            self.refused += 1
        return ok


def ec2_action(method: str, headers, body: bytes) -> str | None:
    """The EC2 Query API action of a request, if it is one (form-encoded ``Action=``)."""
    if method != "POST" or b"Action=" not in body:
        return None
    auth = headers.get("Authorization", "") if hasattr(headers, "get") else ""
    if "/ec2/aws4_request" not in auth:
        return None
    params = urllib.parse.parse_qs(body.decode("utf-8", "replace"))
    return (params.get("Action") or [None])[0]


def throttle_response(protocol: str) -> tuple[int, list[tuple[str, str]], bytes]:
    """The throttling answer in the request's protocol: EC2's XML ``RequestLimitExceeded``, the
    JSON protocols' ``ThrottlingException``; for the others an HTTP 503 ``SlowDown``."""
    if protocol == "ec2":
        body = (b'<?xml version="1.0" encoding="UTF-8"?><Response><Errors><Error>'
                b"<Code>RequestLimitExceeded</Code><Message>Request limit exceeded.</Message>"
                b"</Error></Errors><RequestID>stackdrop-local-fault</RequestID></Response>")
        return 503, [("Content-Type", "text/xml")], body
    if protocol == "json":
        return 400, [("Content-Type", "application/x-amz-json-1.0"),
                     ("x-amzn-ErrorType", "ThrottlingException")], \
            b'{"__type":"ThrottlingException","message":"Rate exceeded (stackdrop-local fault)"}'
    return 503, [("Content-Type", "application/xml")], \
        b"<Error><Code>SlowDown</Code><Message>Please reduce your request rate.</Message></Error>"


def protocol_of(headers, ec2: bool) -> str:
    if ec2:
        return "ec2"
    ctype = headers.get("Content-Type", "") if hasattr(headers, "get") else ""
    return "json" if "amz-json" in ctype else "other"


def access_denied_response() -> tuple[int, list[tuple[str, str]], bytes]:
    return 403, [("Content-Type", "application/xml")], \
        (b'<?xml version="1.0" encoding="UTF-8"?><Error><Code>AccessDenied</Code>'
         b"<Message>Access Denied (stackdrop-local fault)</Message></Error>")


def server_error_response() -> tuple[int, list[tuple[str, str]], bytes]:
    return 503, [("Content-Type", "text/plain")], b"Service Unavailable (stackdrop-local fault)"


LAMBDA_TIMEOUT_BODY = (b'{"errorType":"Sandbox.Timedout","errorMessage":'
                       b'"Task timed out (injected by stackdrop-local after the function ran)"}')

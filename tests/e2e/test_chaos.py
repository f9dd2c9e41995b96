"""A few seeded chaos runs (tests/chaos/chaos.py) in every `make test`; `make chaos` runs many.
CHAOS_SEEDS picks them (default 1-2)."""

import os
import sys

from conftest import ROOT

sys.path.insert(0, os.path.join(ROOT, "tests", "chaos"))

import chaos  # noqa: E402


def test_seeded_chaos_runs_settle_to_the_newest_version_with_nothing_orphaned(sd):
    seeds = chaos.seeds_of(os.environ.get("CHAOS_SEEDS", "1-2"))
    results = chaos.run_seeds(sd, seeds, parallel=len(seeds))
    failed = [r for r in results if not r["ok"]]
    assert not failed, "\n".join(r["why"] for r in failed)

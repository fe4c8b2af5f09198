"""Behaviour kept across refactorings: short runs of every kind of model, prior and objective log
the same losses as recorded in tests/reference_losses.json (to 1e-6; rewrite that file with
``python tests/reference_losses.py --write`` only when the maths changes on purpose)."""
import json

import pytest

from .reference_losses import FILE, WORKLOADS, losses

REFERENCE = json.loads(FILE.read_text())


@pytest.mark.parametrize("name", list(WORKLOADS))
def test_the_losses_of_fixed_seed_runs_are_unchanged(name):
    got, want = losses(WORKLOADS[name]), REFERENCE[name]
    assert len(got) == len(want)
    for step, (g, w) in enumerate(zip(got, want)):
        assert g.keys() == w.keys(), step
        for k in w:
            assert g[k] == pytest.approx(w[k], rel=1e-6, abs=1e-6), (step, k)

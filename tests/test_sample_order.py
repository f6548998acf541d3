"""The built-in sample has a state that only frame order tells: a temporal head learns it, an order-blind one cannot."""

import json

import pytest

from tests.conftest import run_cli

STATES = ["Boredom", "Engagement", "Confusion", "Frustration"]


@pytest.mark.slow
@pytest.mark.timeout(1500)
def test_a_temporal_head_learns_the_state_that_needs_time(sample_embedded, tmp_path):
    """The sample's Confusion levels 1-3 differ only in the order of the same poses: a head that sees
    order (tcn) must beat one that pools it away (fc) there. Confusion has a handful of minority
    clips per split, so one run's macro-F1 swings by ~0.1: compare means over three seeds, on one
    cache, through the real grid runner."""
    grid = tmp_path / "grid.yaml"
    grid.write_text("base: {backbone: fer2013}\nexperiments: [{head: tcn}, {head: fc}]\nseeds: [0, 1, 2]\n")
    run_cli("experiments", str(grid), "--manifest", str(sample_embedded), "--quiet", module="sequence", timeout=900)
    rows = json.loads(run_cli("runs", "--manifest", str(sample_embedded), "--json", module="sequence").stdout)
    # `runs` folds runs that differ only by seed into one row: mean and sd over the three.
    f1 = {h: next(r["C F1"] for r in rows if r["head"].startswith(h) and r["seeds"] == "0,1,2") for h in ("tcn", "fc")}
    assert f1["tcn"]["mean"] >= f1["fc"]["mean"] + 0.05, f1

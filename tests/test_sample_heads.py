"""The built-in sample is learnable: the default heads beat the majority baseline on it."""

import json

import pytest

from tests.conftest import run_cli

STATES = ["Boredom", "Engagement", "Confusion", "Frustration"]


@pytest.mark.slow
# The sample's embedding (152 clips) runs in the setup of the first test of the session that needs it.
@pytest.mark.timeout(1500)
def test_lstm_and_transformer_beat_the_majority_baseline_on_the_sample(sample_embedded, tmp_path):
    """The default lstm and the default transformer each beat the majority-class baseline by at
    least 20 points on at least two of the sample's states (one grid: the cache is read once)."""
    grid = tmp_path / "heads.yaml"
    grid.write_text("base: {backbone: fer2013}\nexperiments: [{head: lstm}, {head: transformer}]\n")
    run_cli("experiments", str(grid), "--manifest", str(sample_embedded), "--quiet", module="sequence", timeout=900)
    rows = json.loads(run_cli("runs", "--manifest", str(sample_embedded), "--json", module="sequence").stdout)
    for head in ("lstm", "transformer"):
        row = next(r for r in rows if r["head"].startswith(head) and r["seeds"] == "0")
        gains = {s: row[f"{s[0]} acc"] - row[f"{s[0]} maj"] for s in STATES}
        assert sum(g >= 0.20 for g in gains.values()) >= 2, (head, gains)

"""docs/api.md is executed: every Python block, in order, in one namespace, from a folder whose
data_manifest.yaml is the built-in sample embedded with fer2013 (as after `make demo`)."""

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[1]


@pytest.mark.timeout(600)
def test_every_block_of_the_api_doc_runs(sample_embedded, tmp_path, monkeypatch):
    blocks = re.findall(r"```python\n(.*?)```", (ROOT / "docs" / "api.md").read_text(), flags=re.S)
    assert len(blocks) == 4
    (tmp_path / "data_manifest.yaml").write_text(sample_embedded.read_text())
    monkeypatch.chdir(tmp_path)
    namespace: dict = {"__name__": "api_doc"}
    for i, block in enumerate(blocks, start=1):
        exec(compile(block, f"docs/api.md block {i}", "exec"), namespace)  # noqa: S102 (the documented code itself)
    # What the blocks leave behind is what they say: a run, a prediction per video, timelines.
    assert Path(namespace["result"]["run"]).parent == tmp_path / "runs" / "sample"
    assert len(namespace["folder"]) >= 2 and namespace["timeline"][0]["start"] == 0.0

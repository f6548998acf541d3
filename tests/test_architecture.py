"""The dependency rules of docs/architecture.md, checked on the code itself."""

import ast
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).parents[1]
# What stage two may import from stage one (docs/architecture.md, "Dependency rules").
SEQUENCE_MAY_IMPORT = {
    "embed.cache",
    "embed.cluster",
    "embed.console",
    "embed.devices",
    "embed.errors",
    "embed.identity",
    "embed.layouts",
    "embed.lookahead",
    "embed.manifest",
    "embed.model_stage",
    "embed.plugins",
    "embed.push_pipe",
    "embed.stores",
}
# Stage one's public streaming entry (one source, or many: the engine), and the source-kind test
# beside it: sequence/run.py alone.
STREAMING_ENTRY = {"embed.engine", "embed.streaming", "embed.video"}


def _imports(path: Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
    return found


def test_sequence_imports_only_what_the_rule_allows_from_embed():
    wrong = {}
    for path in sorted((ROOT / "sequence").rglob("*.py")):
        allowed = SEQUENCE_MAY_IMPORT | (STREAMING_ENTRY if path.name == "run.py" else set())
        bad = {m for m in _imports(path) if m.split(".")[0] == "embed" and m not in allowed}
        if bad:
            wrong[str(path.relative_to(ROOT))] = sorted(bad)
    assert wrong == {}


def test_embed_never_imports_sequence():
    wrong = [
        str(p.relative_to(ROOT))
        for p in (ROOT / "embed").rglob("*.py")
        if any(m.split(".")[0] == "sequence" for m in _imports(p))
    ]
    assert wrong == []


def test_training_and_the_light_commands_never_load_decoding_or_detection():
    """Importing stage two's training, its CLI and stage one's store-reading modules loads neither the
    decoder (PyAV), nor MTCNN (facenet-pytorch), nor torchvision: seconds of start-up they do not need."""
    light = "sequence.cli sequence.experiment sequence.predict sequence.live embed.cli embed.stores embed.extraction"
    heavy = ("av", "torchvision", "facenet_pytorch", "embed.detector", "embed.video")
    code = f"import json, sys, {', '.join(light.split())}\nprint(json.dumps([m for m in {heavy!r} if m in sys.modules]))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT)
    assert json.loads(out.stdout) == []

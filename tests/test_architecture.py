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
    "embed.cli_options",
    "embed.cluster",
    "embed.console",
    "embed.devices",
    "embed.errors",
    "embed.identity",
    "embed.layouts",
    "embed.locking",
    "embed.lookahead",
    "embed.manifest",
    "embed.model_stage",
    "embed.plugins",
    "embed.push_pipe",
    "embed.pyplot",
    "embed.stores",
}
# Stage one's public streaming entry (one source, or many: the engine), and the source-kind test
# beside it: the modules that predict on new video alone (inside functions or for type hints only,
# which test_training_and_the_light_commands_never_load_decoding_or_detection checks).
STREAMING_ENTRY = {"embed.engine", "embed.streaming", "embed.video"}
PREDICTING = {"sequence/run.py", "sequence/predict.py", "sequence/live.py", "sequence/serve/hub.py"}


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
        allowed = SEQUENCE_MAY_IMPORT | (STREAMING_ENTRY if str(path.relative_to(ROOT)) in PREDICTING else set())
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
    light = (
        "sequence.cli sequence.experiment sequence.predict sequence.live sequence.serve.hub sequence.tuning "
        "sequence.cross_validation sequence.datasets embed.cli embed.stores embed.extraction"
    )
    heavy = ("av", "torchvision", "facenet_pytorch", "embed.detector", "embed.video")
    code = f"import json, sys, {', '.join(light.split())}\nprint(json.dumps([m for m in {heavy!r} if m in sys.modules]))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT)
    assert json.loads(out.stdout) == []


def _project_modules() -> list[Path]:
    return sorted(p for d in ("embed", "sequence") for p in (ROOT / d).rglob("*.py"))


def test_modules_stay_small_and_command_lines_thin():
    """No module of either stage over 450 lines; a command-line module (it parses, calls, prints)
    over 300."""
    lines = {str(p.relative_to(ROOT)): len(p.read_text().splitlines()) for p in _project_modules()}
    assert {p: n for p, n in lines.items() if n > 450} == {}
    assert {p: n for p, n in lines.items() if Path(p).name.startswith("cli") and n > 300} == {}


def _defined(tree: ast.AST) -> set[str]:
    """Functions and classes a file defines, but functions taking *args (a command line's words)."""
    kinds = ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef
    return {
        n.name
        for n in ast.walk(tree)
        if isinstance(n, kinds) and not n.name.startswith("__") and (isinstance(n, ast.ClassDef) or n.args.vararg is None)
    }


def test_no_call_passes_more_than_three_arguments_by_position():
    """A call of this project's functions and classes (the stages', or the calling file's own) names
    every argument after the third. Method calls on a logger or a dask client are theirs, not ours."""
    own = set().union(*(_defined(ast.parse(p.read_text())) for p in _project_modules()))
    wrong = []
    for p in [*_project_modules(), *sorted((ROOT / "tests").glob("*.py")), *sorted((ROOT / "bench").glob("*.py"))]:
        tree = ast.parse(p.read_text())
        names = own | _defined(tree)
        for n in ast.walk(tree):
            if not isinstance(n, ast.Call) or len(n.args) <= 3 or any(isinstance(a, ast.Starred) for a in n.args):
                continue
            if isinstance(n.func, ast.Attribute):
                if isinstance(n.func.value, ast.Name) and n.func.value.id in ("log", "logging", "client"):
                    continue
                name = n.func.attr
            else:
                name = getattr(n.func, "id", None)
            if name in names:
                wrong.append(f"{p.relative_to(ROOT)}:{n.lineno} {name}")
    assert wrong == []

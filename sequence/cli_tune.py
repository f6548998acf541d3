"""`python -m sequence tune`: a search for the best settings over a space file, on this machine or on
dask workers; parses its options, calls sequence.tuning.tune, prints."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from embed.cli_options import CLUSTER_OPTIONS, DatasetOpt, JsonOpt, ManifestOpt, QuietOpt, with_options
from embed.cluster import ClusterChoice
from embed.console import err, fail, setup_logging
from embed.errors import ConfigError
from sequence.cli_options import CvOpt


@with_options(ClusterChoice, CLUSTER_OPTIONS)
def tune(
    space: Annotated[
        Path, typer.Argument(help="A space YAML: `base` settings and the `space` trials sample (see configs/).")
    ],
    cluster: ClusterChoice,
    trials: Annotated[int, typer.Option(min=1, help="Trials this call adds to the study.")] = 20,
    timeout: Annotated[float | None, typer.Option(help="Start no trial after this many seconds [no limit].")] = None,
    storage: Annotated[
        str | None,
        typer.Option(
            help="The study's database URL, e.g. postgresql://host/db [a SQLite file in the dataset's runs folder]."
        ),
    ] = None,
    study: Annotated[str | None, typer.Option(help="The study's name [the space file's name].")] = None,
    cv: CvOpt = None,
    seed: Annotated[int, typer.Option(help="The sampler's seed.")] = 0,
    manifest: ManifestOpt = Path("data_manifest.yaml"),
    dataset: DatasetOpt = None,
    as_json: JsonOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Search the space with Optuna (TPE, median pruning on validation macro-F1); each trial a run
    folder. A second call adds trials to the same study; a killed one resumes. The best trial is
    tested once, on the Test split."""
    setup_logging(quiet)
    from sequence.cli_print import print_state_table, print_top_trials
    from sequence.tuning import TuneOptions
    from sequence.tuning import tune as run_tuning

    options = TuneOptions(
        space,
        manifest,
        dataset,
        trials=trials,
        timeout=timeout,
        cluster=cluster,
        storage=storage,
        study=study,
        cv=cv,
        seed=seed,
        progress=not quiet,
    )
    try:
        out = run_tuning(options)
    except ConfigError as e:
        fail(str(e))
    if out["cluster"]:
        err.print(f"dask: {len(out['trials'])} trials in {out['cluster']['seconds']} s", highlight=False)
    print_top_trials(out)
    test = out["test"]
    err.print(f"best: trial {test['trial']} — Test split, scored once for it:", highlight=False)
    print_state_table(test, out["states"])
    for name, path in out["outputs"].items():
        err.print(f"{name}: {path}", highlight=False, soft_wrap=True)
    print(json.dumps({k: v for k, v in out.items() if k != "states"}) if as_json else out["outputs"]["best_grid"])

"""Space files: what a trial samples, and the one-line errors that stop a wrong space before any trial."""

from pathlib import Path

import optuna
import pytest

from embed.errors import ConfigError
from sequence.tune_space import load_space

ROOT = Path(__file__).parents[1]


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "space.yaml"
    path.write_text(text)
    return path


def test_a_head_parameter_is_sampled_only_for_heads_that_take_it(caplog):
    space = load_space(ROOT / "configs/tune_sample.yaml")
    said: set = set()
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    configs = []
    with caplog.at_level("INFO", logger="sequence.tune_space"):
        for _ in range(40):
            trial = study.ask()
            configs.append(space.sample(trial, said))
            study.tell(trial, 0.0)
    by_head = {c.head: c for c in configs}
    assert set(by_head) == {"lstm", "gru", "tcn", "transformer", "fc"}
    assert "pool" in by_head["fc"].head_params and "pool" not in by_head["lstm"].head_params
    assert "hidden" not in by_head["tcn"].head_params and isinstance(by_head["gru"].head_params["hidden"], list)
    assert all(3.0e-4 <= c.lr <= 3.0e-3 and c.frames == 20 for c in configs)
    left_out = [r.getMessage() for r in caplog.records if "left out" in r.getMessage()]
    assert len(left_out) == len(set(left_out)) == len(said)  # said once per head and parameter


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("space: {lr: [1, 2]}\nextra: 1\n", "unknown key 'extra'"),
        ("base: {head: fc}\n", "no `space`"),
        ("space: {seed: [0, 1]}\n", "'seed' cannot be tuned"),
        ("space: {learning_rate: [0.1]}\n", "'learning_rate' is not a setting"),
        ("space: {lr: {low: 1e-4, high: 1e-2}}\n", "must be a number"),  # YAML reads 1e-4 as text
        ("space: {lr: {low: 0, high: 0.1, log: true}}\n", "a log range needs low > 0"),
        ("space: {head: [lstm, gru], head_params.pool: [mean]}\n", "takes 'pool'"),
        ("space: {head: [lstm, nohead]}\n", "head 'nohead' does not exist"),
        ("base: {epochs: 0}\nspace: {lr: [0.1]}\n", "key 'epochs'"),
    ],
)
def test_a_wrong_space_is_one_line_naming_the_file_and_the_fix(tmp_path, text, says):
    path = _write(tmp_path, text)
    with pytest.raises(ConfigError) as e:
        load_space(path)
    message = str(e.value)
    assert says in message and str(path) in message and "fix:" in message and "\n" not in message

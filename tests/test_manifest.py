import pytest

from embed.errors import ConfigError
from embed.manifest import DEFAULT_STATES, load_manifest
from tests.conftest import write_manifest


def test_defaults_and_relative_paths(tmp_path):
    path = write_manifest(tmp_path / "m.yaml", {"d": {"layout": "daisee", "root": "data/d"}})
    path.write_text("datasets:\n  d: {layout: daisee, root: data/d}\n")
    m = load_manifest(path)
    assert m.states == DEFAULT_STATES and m.levels == 4 and m.dataset(None)[0] == "d"
    assert m.cache_path == tmp_path / "cache"
    assert m.dataset_root("d", must_exist=False) == tmp_path / "data" / "d"


def test_env_var_root(tmp_path, monkeypatch):
    path = write_manifest(tmp_path / "m.yaml", {"d": {"layout": "daisee", "root": "${MY_DAISEE}/x"}})
    m = load_manifest(path)
    with pytest.raises(ConfigError, match=r"MY_DAISEE.*not set.*export MY_DAISEE"):
        m.dataset_root("d")
    (tmp_path / "real" / "x").mkdir(parents=True)
    monkeypatch.setenv("MY_DAISEE", str(tmp_path / "real"))
    assert m.dataset_root("d") == tmp_path / "real" / "x"


@pytest.mark.parametrize(
    "text, pattern",
    [
        ("datasets: {d: {layout: daisee, root: x}}\ncache_dri: c\n", r"m\.yaml: unknown key 'cache_dri'"),
        ("datasets: {d: {layout: daisee, root: x, colour: red}}\n", r"unknown key 'datasets\.d\.colour'"),
        ("datasets: {d: {layout: avi, root: x}}\n", r"key 'datasets\.d\.layout'"),
        ("datasets:\n  d: [unclosed\n", r"m\.yaml: line \d+ YAML syntax error"),
        ("cache_dir: c\n", r"missing key 'datasets'"),
    ],
)
def test_bad_manifests_give_one_line_errors(tmp_path, text, pattern):
    (tmp_path / "m.yaml").write_text(text)
    with pytest.raises(ConfigError, match=pattern) as e:
        load_manifest(tmp_path / "m.yaml")
    assert "\n" not in str(e.value) and "fix" in str(e.value)


def test_missing_root_and_unknown_dataset(tmp_path):
    m = load_manifest(write_manifest(tmp_path / "m.yaml", {"d": {"layout": "daisee", "root": "nowhere"}}))
    with pytest.raises(ConfigError, match=r"datasets\.d\.root = .*nowhere does not exist"):
        m.dataset_root("d")
    with pytest.raises(ConfigError, match=r"no dataset 'zz'.*known: d"):
        m.dataset("zz")

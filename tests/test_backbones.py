"""Every registered backbone: shapes, determinism, and the real weight-loading paths."""

import pytest
import torch

from embed.backbones import backbone_names, get_backbone
from embed.backbones.fec import FECNet
from embed.errors import ConfigError


def _crops(b, n=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, 3, b.input_size, b.input_size, generator=g) * 255


@pytest.mark.parametrize("name", backbone_names())
def test_random_backbone_shape_dtype_determinism(name):
    spec = get_backbone(name)
    x = _crops(spec)
    a = spec.build("random", "cpu").embed(x)
    assert a.shape == (3, spec.dim) and a.dtype == torch.float32 and torch.isfinite(a).all()
    assert torch.equal(a, spec.build("random:0", "cpu").embed(x))
    assert not torch.allclose(a, spec.build("random:1", "cpu").embed(x))
    assert spec.identity("random:7") == "random:7"


def test_registry_has_the_three_backbones():
    assert {"inception", "resnet18", "fec"} <= set(backbone_names())
    assert (get_backbone("inception").dim, get_backbone("resnet18").dim, get_backbone("fec").dim) == (512, 512, 128)


def test_inception_vggface2_release_loaded_through_facenet(_offline_torch_home):
    """A file saved where facenet-pytorch's own loader looks is loaded by `--weights vggface2`."""
    from facenet_pytorch import InceptionResnetV1

    spec = get_backbone("inception")
    torch.manual_seed(11)
    released = InceptionResnetV1(classify=True, num_classes=8631).eval()  # as released: with logits
    target = spec.releases()["vggface2"].cached_file
    target.parent.mkdir(parents=True, exist_ok=True)
    torch.save(released.state_dict(), target)
    try:
        loaded = spec.build("vggface2", "cpu")
        x = _crops(spec)
        released.classify = False
        expected = released((x - 127.5) / 128)
        assert torch.allclose(loaded.embed(x), expected, atol=1e-5)
        assert not torch.allclose(loaded.embed(x), spec.build("random", "cpu").embed(x))
        assert loaded.weights_identity.startswith("vggface2:sha256:")
    finally:
        target.unlink()


def test_resnet18_imagenet_release_loaded_through_torchvision():
    from torchvision.models import resnet18

    spec = get_backbone("resnet18")
    torch.manual_seed(5)
    net = resnet18(weights=None)
    target = spec.releases()["imagenet"].cached_file
    target.parent.mkdir(parents=True, exist_ok=True)
    torch.save(net.state_dict(), target)
    try:
        x = _crops(spec, 2)
        out = spec.build("imagenet", "cpu").embed(x)
        assert not torch.allclose(out, spec.build("random", "cpu").embed(x))
    finally:
        target.unlink()


def test_weights_file_changes_output_and_key(tmp_path):
    spec = get_backbone("fec")
    torch.manual_seed(3)
    path = tmp_path / "fec.pt"
    torch.save(FECNet().state_dict(), path)
    x = _crops(spec)
    trained = spec.build(str(path), "cpu")
    assert trained.weights_identity.startswith("file:sha256:")
    assert not torch.allclose(trained.embed(x), spec.build("random", "cpu").embed(x))


def test_missing_release_names_file_and_fix():
    spec = get_backbone("inception")
    with pytest.raises(ConfigError, match=r"20180402-114759-vggface2\.pt.*fix: download https://.*vggface2\.pt and save it"):
        spec.build("vggface2", "cpu")


def test_bad_weights_are_clear_errors(tmp_path):
    with pytest.raises(ConfigError, match="no default weights"):
        get_backbone("fec").build(None, "cpu")
    with pytest.raises(ConfigError, match="no such file"):
        get_backbone("fec").build(str(tmp_path / "nope.pt"), "cpu")
    wrong = tmp_path / "wrong.pt"
    torch.save({"x": torch.zeros(2)}, wrong)
    with pytest.raises(ConfigError, match=r"wrong\.pt: not a state dict for backbone 'fec'"):
        get_backbone("fec").build(str(wrong), "cpu")


def test_weights_identity_forms_round_trip_match_and_rebuild(tmp_path):
    """embed.identity is the one reader and writer of the weights identity in store configs."""
    import hashlib

    from embed.identity import WeightsIdentity, file_identity, random_identity, release_identity

    f, g = tmp_path / "w.pt", tmp_path / "g.pt"
    f.write_bytes(b"abc")
    g.write_bytes(b"abd")
    sha = hashlib.sha256(b"abc").hexdigest()[:16]
    assert file_identity(f) == f"file:sha256:{sha}" and release_identity("vggface2", f) == f"vggface2:sha256:{sha}"
    assert random_identity("random") == "random:0" and random_identity("random:7") == "random:7"
    for text in ("random:3", f"file:sha256:{sha}", f"casia-webface:sha256:{sha}"):
        assert str(WeightsIdentity.parse(text)) == text
    for bad in ("vggface2", "file:sha256:", ":sha256:abc"):
        with pytest.raises(ValueError):
            WeightsIdentity.parse(bad)

    rnd, rel, fil = (WeightsIdentity.parse(t) for t in ("random:0", f"vggface2:sha256:{sha}", file_identity(f)))
    assert rnd.matches("random") and rnd.matches("random:0") and not rnd.matches("random:1")
    assert not rnd.matches("vggface2") and not rnd.matches(str(f))
    assert rel.matches("vggface2") and not rel.matches("casia-webface") and not rel.matches(str(f))
    assert fil.matches(str(f)) and not fil.matches(str(g)) and not fil.matches("random")
    assert all(i.matches(None) for i in (rnd, rel, fil))
    with pytest.raises(ConfigError, match="the seed must be an integer"):
        rnd.matches("random:x")

    # What predict passes as --weights to embed a new video as the run's cache was.
    assert rnd.weights_arg(None) == "random:0" and rel.weights_arg("ignored") == "vggface2"
    assert fil.weights_arg(str(f)) == str(f)
    with pytest.raises(ConfigError, match=f"not at {g}; fix: pass --weights"):
        fil.weights_arg(str(g))  # the file at the recorded path has changed
    with pytest.raises(ConfigError, match="not at a recorded path"):
        fil.weights_arg(None)

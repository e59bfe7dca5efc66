"""Several images through the generator together (amg.images_per_batch) and each image's last steps in
host threads (amg.host_threads): the same masks, fewer encoder calls, host work overlapping the model."""

import threading
import time

import pytest
from images import shapes_image
from test_auto_stage import write_images

from data_engine.amg import generator as amg
from data_engine.amg.agreement import agreement
from data_engine.amg.generator import MaskGenerator
from data_engine.io.dataset import read_images, read_masks
from data_engine.model.build import build_sam
from data_engine.stages import run_stage

SETTINGS = dict(points_per_side=8, crop_n_layers=1, pred_iou_thresh=0.5, stability_score_thresh=0.5)


@pytest.fixture(scope="module")
def tiny():
    return build_sam("tiny", device="cpu")


@pytest.fixture(scope="module")
def images():
    return [shapes_image(1, 96, 128), shapes_image(2, 120, 90)]


class CountingEncoder:
    """Wraps an image encoder and records the batch size of every call."""

    def __init__(self, encoder, calls):
        self.encoder, self.calls = encoder, calls

    def __call__(self, batch):
        self.calls.append(len(batch))
        return self.encoder(batch)


def test_a_batch_gives_each_image_the_masks_generate_gives_it(tiny, images, one_thread):
    gen = MaskGenerator(tiny, crops_per_batch=1, **SETTINGS)  # single-crop encoder calls: bit for bit
    together = gen.generate_batch(images)
    assert together == [gen.generate(image) for image in images]
    assert sum(len(r["segmentation"]) for r in together) > 0


def test_crops_of_several_images_share_encoder_batches(tiny, images, one_thread):
    gen = MaskGenerator(tiny, crops_per_batch=4, **SETTINGS)
    alone, calls = [gen.generate(image) for image in images], []
    gen.encoder = CountingEncoder(gen.encoder, calls)
    together = gen.generate_batch(images)
    # Layer 0: the 2 whole images in one call; layer 1: 8 crops in 2 calls (alone: 2 calls per image)
    assert calls == [2, 4, 4]
    figures = agreement(
        [(a["segmentation"], b["segmentation"], *im.shape[:2]) for a, b, im in zip(alone, together, images)]
    )
    assert figures["mean_matched_iou"] > 0.99 and figures["only_a"] == figures["only_b"] == 0


def test_host_threads_give_the_same_masks_while_the_model_goes_on(tiny, images, one_thread, monkeypatch):
    exact = MaskGenerator(tiny, crops_per_batch=1, **SETTINGS).generate_batch(images)
    gen = MaskGenerator(tiny, crops_per_batch=1, host_threads=2, **SETTINGS)
    encoded, events = threading.Event(), []
    merge, encoder = gen._merge_crops, gen.encoder

    def first_merge_waits_for_the_model(parts, n_crops, size):
        if not events:  # the first image's last steps: wait until the model works on another image
            events.append(("merge", threading.current_thread().name, encoded.wait(timeout=20)))
        return merge(parts, n_crops, size)

    def encode(batch):
        encoded.set()
        return encoder(batch)

    monkeypatch.setattr(gen, "_merge_crops", first_merge_waits_for_the_model)
    gen.encoder = encode
    start = time.monotonic()
    assert gen.generate_batch(images) == exact
    assert time.monotonic() - start < 20
    assert events == [("merge", events[0][1], True)] and events[0][1].startswith("amg-host")


def test_the_stage_batches_images_and_keeps_every_failure_to_its_image(make_cfg, tmp_path, monkeypatch):
    write_images(tmp_path / "in", 5)
    (tmp_path / "in" / "broken.png").write_bytes(b"not a png")
    base = [f"input.path={tmp_path / 'in'}", "amg.crops_per_batch=1", "amg.pred_iou_thresh=0.5"]
    one = make_cfg(*base, f"output.dir={tmp_path / 'one'}")
    run_stage(one)
    sizes, real, third = [], MaskGenerator.generate_batch, shapes_image(3, 96, 128)

    def recording(self, batch):
        sizes.append(len(batch))
        if any(image.shape == third.shape and (image == third).all() for image in batch):
            raise ValueError("boom")
        return real(self, batch)

    monkeypatch.setattr(amg.MaskGenerator, "generate_batch", recording)
    two = make_cfg(*base, "amg.images_per_batch=2", f"output.dir={tmp_path / 'two'}")
    run_stage(two)
    # Batches of 2 decoded images; the batch holding the failing image is redone image by image
    assert 2 in sizes
    rows = {r["file_name"]: r for r in read_images(tmp_path / "two").to_pylist()}
    assert rows["img_03.png"]["status"] == "failed" and "boom" in rows["img_03.png"]["error"]
    assert rows["broken.png"]["status"] == "failed" and len(rows) == 6
    assert all(r["status"] == "ok" for name, r in rows.items() if name not in ("img_03.png", "broken.png"))
    # Every other image has the masks it gets alone
    alone = [r["segmentation"] for r in read_masks(tmp_path / "one").to_pylist() if r["file_name"] != "img_03.png"]
    together = [r["segmentation"] for r in read_masks(tmp_path / "two").to_pylist()]
    assert alone == together and len(together) > 0

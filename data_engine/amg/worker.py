"""The automatic stage's worker: a shard of image files -> masks/ and images/ Parquet files and its _done record.

Images are decoded ahead of the model (io.prefetch), go through the MaskGenerator (several at a time with
amg.images_per_batch), and the finished shard is written in the background (runs.ShardWriter). With
amg.keep_candidates the shard's candidates (amg/candidates.py) are written before it, each with its
verifier_score when there is a verifier (verifier.checkpoint). Stage 2's prefill (semi.worker) is this
worker with other prompts.
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path

from data_engine.amg import candidates
from data_engine.io import inputs
from data_engine.io.dataset import image_row, mask_row
from data_engine.io.images import load_rgb
from data_engine.io.prefetch import prefetch
from data_engine.runtime import runs
from data_engine.runtime.reasons import reason

log = logging.getLogger(__name__)

AHEAD = 2  # images read and decoded ahead of the model


class AutoWorker:
    """Loads the model once; turns a shard of image files into its Parquet files."""

    batches_images = True  # images go through the generator amg.images_per_batch at a time
    verifier = None  # the mask verifier scoring every mask (verifier.checkpoint), set by __init__
    found = None  # the candidates of the image being processed, when they are kept (rows)

    def __init__(self, cfg: dict, root: str):
        from data_engine.amg.generator import mask_generator
        from data_engine.model.build import build_sam, model_args

        self.cfg, self.root, self.out_dir = cfg, Path(root), Path(cfg["output"]["dir"])
        self.model_name = cfg["model"]["variant"]
        sam = build_sam(**model_args(cfg["model"]), device=cfg["model"]["device"])
        self.generator = mask_generator(sam, **cfg["amg"])
        self.verifier = load_verifier(cfg, self.generator.device)
        self.writer = runs.ShardWriter(self.out_dir, self.generator.device)

    def __call__(self, shard: dict, on_image=lambda *event: None) -> dict:
        """Images are read AHEAD of the model and the finished shard is written in the background, so
        the worker waits on neither; its _done record has the seconds spent in the model and busy."""
        start, results, self.model_seconds, self.candidates = time.time(), [], 0.0, []
        self.writer.check_space()  # a full disk fails the shard before its work is done
        per_batch = self.cfg["amg"]["images_per_batch"] if self.batches_images else 1
        loaded = prefetch(self.load, shard["files"], max(AHEAD, per_batch), self.cfg["input"]["image_timeout_s"])
        for group in batched(enumerate(loaded), per_batch):
            for i, _ in group:
                self._maybe_crash(shard["shard_id"], i)
            for (i, _), result in zip(group, self.process_images([item for _, item in group])):
                results.append(result)
                on_image(shard["shard_id"], i, len(result[1]), result[0]["status"] == "failed")
        timings = {"model_seconds": round(self.model_seconds, 3), "busy_seconds": round(time.time() - start, 3)}
        extra = {"inputs": shard.get("inputs"), **timings, **self.shard_counts(results)}
        if self.cfg["amg"].get("keep_candidates"):
            candidates.write(self.out_dir, shard["shard_id"], self.candidates)
            extra["candidates"] = sum(len(t) for t in self.candidates)
        self.writer.submit(shard["shard_id"], results, start, extra)
        images = [row for row, _ in results]
        failed = sum(row["status"] == "failed" for row in images)
        masks = sum(len(m) for _, m in results)
        # the shard is still being written; write_failed: earlier shards whose write failed since
        counts = {"images": len(images), "masks": masks, "failed": failed}
        return {**counts, **extra, "write_failed": self.writer.settled()["write_failed"]}

    def shard_counts(self, results: list[tuple[dict, list[dict]]]) -> dict:
        """More counts for the shard's _done record, which the stage's summary adds up (none here)."""
        return {}

    def close(self) -> dict:
        """The last shard written; {shard_id: reason} for shards whose write failed."""
        return self.writer.close()

    def load(self, name: str):
        """[H, W, 3] uint8 of one input file; only a regular file is opened."""
        path = inputs.resolve(self.root, name)
        inputs.check_regular(path)
        return load_rgb(path, self.cfg["input"]["max_pixels"])

    def process_images(self, items: list[tuple[str, object]]) -> list[tuple[dict, list[dict]]]:
        """process_image of each (name, decoded image or its load's exception); the decoded images go
        through the generator together (generate_batch)."""
        ready = [image for _, image in items if not isinstance(image, BaseException)]
        if len(ready) < 2:
            return [self.process_image(name, image) for name, image in items]
        start = time.time()
        try:
            generated = iter(self.generator.generate_batch(ready))
        except Exception:  # image by image, so that each failure gets its own reason
            return [self.process_image(name, image) for name, image in items]
        share = (time.time() - start) / len(ready)
        return [
            self.process_image(name, image, None if isinstance(image, BaseException) else next(generated), share)
            for name, image in items
        ]

    def process_image(self, name: str, image, generated: dict | None = None, seconds: float = 0.0):
        """One image row (ok or failed with its reason) and its mask rows; `image` is the decoded image or
        the exception its load raised; `generated`: its generator columns when already computed, in
        `seconds`."""
        start = time.time() - seconds
        entry = {"image_id": inputs.image_id(name), "file_name": name}  # then its size, once decoded
        try:
            if isinstance(image, BaseException):
                raise image
            entry.update(height=image.shape[0], width=image.shape[1])
            if generated is None:
                masks = self.image_masks(image, entry)
            else:
                masks = self.rows(generated, entry)
            masks = self.verified(image, masks)
            self.keep_candidates(image, entry)
        except Exception as err:  # per-image boundary: one bad file never stops the shard
            log.warning("%s failed: %s", name, reason(err))
            return image_row(entry, seconds=time.time() - start, error=reason(err)), []
        self.model_seconds += time.time() - start
        return image_row(entry, num_masks=len(masks), seconds=time.time() - start), masks

    def image_masks(self, image, row: dict) -> list[dict]:
        """The mask rows of one decoded image (a stage built on this worker prompts differently)."""
        return self.rows(self.generator.generate(image), row)

    def rows(self, generated: dict, row: dict) -> list[dict]:
        """Generator columns of one image -> its mask rows; its candidates, when kept, are set aside
        (keep_candidates)."""
        self.found = generated.pop("candidates", None)
        return mask_rows(generated, row, self.model_name)

    def verified(self, image, masks: list[dict]) -> list[dict]:
        """The image's mask rows with their verifier_score (unchanged without verifier.checkpoint)."""
        return self.verifier.score_rows(image, masks) if self.verifier else masks

    def keep_candidates(self, image, row: dict) -> None:
        """The image's candidates set aside by `rows`, if any, added to the shard's candidates file; with a
        verifier, each scored as it came from the model (before the clean-up)."""
        found, self.found = self.found, None
        if found is None:
            return
        if self.verifier and found["segmentation"]:
            rows = candidates.scorer_rows(found, row["height"], row["width"])
            found["verifier_score"] = self.verifier.scores(image, rows).tolist()
        self.candidates.append(candidates.image_table(found, row))

    def _maybe_crash(self, shard_id: str, index: int) -> None:
        """Fault injection: the process exits mid-shard, once per output dir (debug.crash_on_shard) or on
        every attempt (debug.kill_on_shard); or it hangs mid-shard, once (debug.hang_on_shard)."""
        debug = self.cfg["debug"]
        if debug.get("kill_on_shard") == shard_id:
            os._exit(18)
        for key, fault in (("crash_on_shard", "crashed"), ("hang_on_shard", "hung")):
            if debug.get(key) != shard_id or index != 1:
                continue
            marker = self.out_dir / "_debug" / f"{fault}-{shard_id}"
            if marker.exists():
                continue
            marker.parent.mkdir(parents=True, exist_ok=True)
            marker.touch()
            self.writer.wait()  # stop at a known point: the previous shard's background write finished
            if fault == "crashed":
                os._exit(17)
            time.sleep(10**6)


def load_verifier(cfg: dict, device):
    """The mask verifier of verifier.checkpoint, on the generator's device; None without one."""
    checkpoint = cfg["verifier"]["checkpoint"]
    if not checkpoint:
        return None
    from data_engine.verifier.score import Scorer

    return Scorer(checkpoint, str(device))


def batched(items, size: int):
    """Lists of `size` consecutive items (the last may be shorter)."""
    group = []
    for item in items:
        group.append(item)
        if len(group) == size:
            yield group
            group = []
    if group:
        yield group


def mask_rows(generated: dict, image: dict, model: str, source: str = "auto") -> list[dict]:
    """Generator columns -> one row per mask (of stage "auto") with the image's fields."""
    fields = [k for k in generated if k != "segmentation"]
    return [
        mask_row(image, counts, stage="auto", source=source, model=model, **{k: generated[k][i] for k in fields})
        for i, counts in enumerate(generated["segmentation"])
    ]

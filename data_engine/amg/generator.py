"""The fully-automatic stage: grid prompts over the image and zoomed crops -> filtered masks.

Same order of work as segment_anything's SamAutomaticMaskGenerator (crops, point batches, IoU and
stability filters, crop-edge filter, NMS within and across crops, small-region clean-up; the steps after
the model are amg/select.py's, shared with the sweep stage), with these differences in how the work is done:
- the crops of one layer go through the image encoder as one batch;
- the mask decoder shares the image side of its first layer across the prompts of a crop and upscales
  only prompts with a mask that can pass the predicted-IoU filter (data_engine/amg/decoder.py: the
  same arithmetic, bit-identical logits), its transformer in batches of `decoder_batch` prompts;
- only masks that pass the predicted-IoU filter are upsampled to full resolution;
- masks are encoded once, straight to COCO compressed RLE with pycocotools.
"""

from __future__ import annotations

import inspect
from concurrent.futures import Future, ThreadPoolExecutor

import numpy as np
import torch
from segment_anything.modeling import Sam
from segment_anything.utils.amg import build_all_layer_point_grids, generate_crop_boxes, is_box_near_crop_edge
from segment_anything.utils.transforms import ResizeLongestSide

from data_engine.amg import candidates
from data_engine.amg.decoder import SharedImageDecoder, supports
from data_engine.amg.postprocess import stability_thresholds, support_windows, window_filters
from data_engine.amg.select import (
    Selection,
    clean_small_regions,
    concat,
    mask_nms,
    nms,
    select_crop,
    select_image,
    thresholds,
    uncrop,
)
from data_engine.io import rle
from data_engine.model.build import is_sam2
from data_engine.model.sdpa_attention import with_sdpa

FIELDS = ("segmentation", "area", "bbox", "predicted_iou", "stability_score", "point_coords", "crop_box")


class MaskGenerator:
    """The automatic stage's mask generation, usable on its own: an image in, its masks' columns out.

        from data_engine import MaskGenerator, build_sam
        from data_engine.config import compose

        generator = MaskGenerator(build_sam("tiny"), **compose(["amg=tiny"])["amg"])  # a preset, or any settings
        masks = generator.generate(image)  # [H, W, 3] uint8 RGB -> {"segmentation": [COCO RLE counts], ...}

    The keyword arguments are the `amg` config section, one to one (conf/amg/ holds the presets).
    """

    def __init__(
        self,
        model: Sam,
        points_per_side: int = 32,
        points_per_batch: int = 64,
        pred_iou_thresh: float = 0.88,
        strict_iou_thresh: bool = False,
        stability_score_thresh: float = 0.95,
        stability_levels: tuple[float, float] = (0.5, 0.55),
        stability_score_offset: float | None = None,
        box_nms_thresh: float = 0.7,
        crop_n_layers: int = 2,
        crop_nms_thresh: float = 0.7,
        crop_overlap_ratio: float = 512 / 1500,
        crop_n_points_downscale_factor: int = 2,
        multimask_output: bool = True,
        use_m2m: bool = False,
        min_mask_region_area: int = 100,
        keep_largest_small_region: bool = False,
        max_mask_area_frac: float | None = 0.95,
        crops_per_batch: int = 4,
        max_upsample_pixels: int = 2**27,
        decoder_batch: int | None = None,
        bf16_autocast: bool = False,
        sdpa_attention: bool = False,
        compile_encoder: bool = False,
        decode_crops_together: bool = False,
        images_per_batch: int = 1,
        host_threads: int = 0,
        mask_nms_thresh: float | None = None,
        keep_candidates: bool = False,
        candidate_iou_floor: float = 0.5,
        candidate_stability_floor: float = 0.5,
    ) -> None:
        """
        model: the SAM to prompt.
        points_per_side: grid size on the full image; crop layer i uses
            points_per_side / crop_n_points_downscale_factor**i.
        points_per_batch: point prompts decoded together.
        pred_iou_thresh: keep masks with predicted IoU >= this (> with strict_iou_thresh, as SAM).
        stability_score_thresh: keep masks whose stability score is >= this.
        stability_levels: the two probability levels whose masks' IoU is the stability score.
        stability_score_offset: if set, use SAM's logit thresholds mask_threshold -/+ offset instead.
        box_nms_thresh: box IoU for NMS within a crop (and after small-region clean-up).
        crop_n_layers, crop_overlap_ratio: zoomed crops, as SAM (layer i: 2**i crops per side).
        crop_nms_thresh: box IoU for NMS across crops; smaller crops win.
        multimask_output: three masks per point prompt (SAM's ambiguity outputs); false: one (SAM 2's option).
        use_m2m: refine each mask once, its point prompt again with its own low-res logits (clamped to
            +-32) as the mask prompt, one output; the filters then read the refined mask and its
            predicted IoU (SAM2AutomaticMaskGenerator's use_m2m).
        min_mask_region_area: holes and islands under this many px are removed (0: off).
        keep_largest_small_region: a mask with only small islands keeps the largest (SAM) instead of
            being removed (SA-1B).
        max_mask_area_frac: masks covering at least this fraction of the image are dropped (None: off).
        crops_per_batch: crops sent through the image encoder together.
        max_upsample_pixels: masks are brought to full resolution in chunks of at most this many
            pixels in all (bounds memory on large images; results do not depend on it).
        decoder_batch: point prompts through the mask decoder's transformer and upscaling at once (None:
            8 on a CPU, where the decoder is bound by memory traffic, else points_per_batch); its heads
            see all of points_per_batch as in SAM, so the masks do not depend on it
            (tests/test_generator_fast_paths.py).
        bf16_autocast: run the image encoder and mask decoder under bfloat16 autocast (GPUs; masks change
            slightly: benchmarks/amg_vs_reference.py --fast measures how much).
        sdpa_attention: the image encoder's attention through scaled_dot_product_attention, its relative
            position bias as an additive mask (data_engine/model/sdpa_attention.py; float rounding only).
        compile_encoder: torch.compile the image encoder (slow first call; then faster on a GPU).
        decode_crops_together: the point prompts of the crops in one encoder batch go through the mask
            decoder together, points_per_batch at a time (GPUs: fewer, larger decoder calls; each prompt
            then gets its own copy of its crop's image side, as in segment_anything).
        images_per_batch: images the automatic stage hands to generate_batch together (their crops share
            encoder batches).
        host_threads: threads for each image's last steps (NMS across crops, small-region clean-up, RLE
            figures), which then overlap the model's work on the next images (0: in the calling thread).
        mask_nms_thresh: after the clean-up, drop a mask whose mask IoU with a kept mask of higher predicted
            IoU is at least this (near-duplicates whose boxes differ too much for box NMS; None: off).
        keep_candidates: also return each image's candidates ("candidates": amg/candidates.py's columns): the
            masks that pass the candidate floors, the crop-edge and the area filters, before the thresholds
            and NMS, for the sweep stage to select from again at other settings.
        candidate_iou_floor, candidate_stability_floor: with keep_candidates, the predicted IoU and the
            stability a candidate needs at least (each lowered to its threshold when that is lower).
        """
        self.model = model
        self.transform = ResizeLongestSide(model.image_encoder.img_size)
        self.point_grids = build_all_layer_point_grids(points_per_side, crop_n_layers, crop_n_points_downscale_factor)
        self.points_per_batch = points_per_batch
        self.selection = Selection(
            pred_iou_thresh,
            strict_iou_thresh,
            stability_score_thresh,
            box_nms_thresh,
            crop_nms_thresh,
            min_mask_region_area,
            keep_largest_small_region,
            mask_nms_thresh,
        )
        # What the filters at the model let through: the thresholds, or the candidate floors under them
        self.keep_candidates = keep_candidates
        self.iou_floor = min(pred_iou_thresh, candidate_iou_floor) if keep_candidates else pred_iou_thresh
        self.iou_floor_strict = strict_iou_thresh and not keep_candidates
        self.stability_floor = (
            min(stability_score_thresh, candidate_stability_floor) if keep_candidates else stability_score_thresh
        )
        self.stability_low, self.stability_high = stability_thresholds(
            model.mask_threshold, stability_levels, stability_score_offset
        )
        self.crop_n_layers = crop_n_layers
        self.masks_per_prompt = 3 if multimask_output else 1
        self.use_m2m = use_m2m
        self.crop_overlap_ratio = crop_overlap_ratio
        self.max_mask_area_frac = max_mask_area_frac
        self.crops_per_batch = crops_per_batch
        self.max_upsample_pixels = max_upsample_pixels
        self.decoder_batch = decoder_batch or (8 if self.device.type == "cpu" else points_per_batch)
        self.bf16_autocast = bf16_autocast
        self.encoder = with_sdpa(model.image_encoder) if sdpa_attention else model.image_encoder
        if compile_encoder:
            self.encoder = torch.compile(self.encoder)
        self.decode_crops_together = decode_crops_together
        self.images_per_batch = images_per_batch
        self.host_pool = ThreadPoolExecutor(host_threads, "amg-host") if host_threads else None

    @property
    def device(self) -> torch.device:
        return self.model.device

    @torch.no_grad()
    def generate(self, image: np.ndarray) -> dict:
        """[H, W, 3] uint8 RGB -> columns of the kept masks (see FIELDS)."""
        return self.generate_batch([image])[0]

    @torch.no_grad()
    def generate_batch(self, images: list[np.ndarray]) -> list[dict]:
        """[H, W, 3] uint8 RGB images -> the columns `generate` gives for each. Crops of one layer go through
        the image encoder together across the images; with host_threads, an image's last steps (NMS across
        crops, clean-up, RLE figures) run in a thread while the model works on the next image."""
        crops = [image_crops(im.shape[:2], self.crop_n_layers, self.crop_overlap_ratio) for im in images]
        parts, results = [[] for _ in images], [None] * len(images)
        left = [len(c) for c in crops]
        together = self.decode_crops_together and supports(self.model.mask_decoder)
        for layer in sorted({i for c in crops for _, i in c}):
            jobs = [(k, box) for k, c in enumerate(crops) for box, i in c if i == layer]
            for chunk, embeddings in self._embed_crops(images, jobs):
                # The crops of an encoder batch decoded together, or one by one
                groups = [(chunk, embeddings)] if together else [([j], e[None]) for j, e in zip(chunk, embeddings)]
                for group, group_embeddings in groups:
                    # Masks of each crop, each crop already de-duplicated
                    for (k, _), data in zip(group, self._crop_masks(group_embeddings, images, group, layer)):
                        parts[k].append(data)
                        left[k] -= 1
                        if left[k] == 0:  # the image's crops are all done
                            results[k] = self._finish(parts[k], len(crops[k]), images[k].shape[:2])
        return [r.result() if isinstance(r, Future) else r for r in results]

    def _finish(self, parts: list[dict], n_crops: int, size) -> dict | Future:
        """An image's crops' masks -> its columns; in a host thread when there are any."""
        if self.host_pool is None:
            return self._merge_crops(parts, n_crops, size)
        return self.host_pool.submit(self._merge_crops, parts, n_crops, size)

    def _merge_crops(self, parts: list[tuple[dict, dict | None]], n_crops: int, size) -> dict:
        """(masks, candidates) of every crop of one image -> its columns (see FIELDS), with "candidates"
        when they are kept."""
        height, width = size
        # Duplicates across crops removed (the most zoomed-in crop wins), small regions cleaned up
        data = select_image([kept for kept, _ in parts], n_crops, height, width, self.selection)
        columns = records(data, height, width)
        if self.keep_candidates:
            columns["candidates"] = candidates.columns([found for _, found in parts])
        return columns

    @torch.no_grad()
    def generate_from_boxes(self, image: np.ndarray, boxes: np.ndarray) -> dict:
        """[H, W, 3] uint8 RGB and [N, 4] XYXY pixel boxes -> columns of the kept masks (see FIELDS; a
        mask's point_coords are its box's two corners) plus `box_index`, the row of `boxes` it came from.

        One mask per box (multimask off, as SamPredictor prompts boxes), then the filters of `generate`:
        predicted IoU, stability, area, box NMS ranked by predicted IoU, small-region clean-up.
        """
        height, width = image.shape[:2]
        boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
        if len(boxes) == 0:
            return {**records({}, height, width), "box_index": []}
        crop_box = [0, 0, width, height]
        ((_, (embedding,)),) = self._embed_crops([image], [(0, crop_box)])
        # Each mask carries its prompt row through the filters: the box corners and the box's index
        prompts = np.concatenate([boxes, np.arange(len(boxes))[:, None]], axis=1)  # [N, 5]
        data = concat(
            [
                self._box_batch(embedding, prompts[i : i + self.points_per_batch], crop_box)
                for i in range(0, len(prompts), self.points_per_batch)
            ]
        )
        selection = self.selection
        if len(data["rles"]):
            data = thresholds(data, selection)  # the floors let more through when candidates are kept
        if len(data["rles"]):
            data = nms(data, data["iou_preds"], selection.box_nms_thresh)
            data["crop_boxes"] = torch.tensor([crop_box] * len(data["rles"]), device=self.device)
        if selection.min_mask_region_area > 0 and len(data["rles"]):
            data = clean_small_regions(data, height, width, selection)
        if selection.mask_nms_thresh is not None and len(data["rles"]):
            data = mask_nms(data, height, width, selection.mask_nms_thresh)
        if not len(data["rles"]):
            return {**records({}, height, width), "box_index": []}
        box_index = data["points"][:, 4].long().tolist()
        data["points"] = data["points"][:, :4].reshape(-1, 2, 2)
        return {**records(data, height, width), "box_index": box_index}

    def _embed_crops(self, images: list[np.ndarray], jobs: list[tuple[int, list[int]]]):
        """Yield (jobs, image embeddings [C, D, h, w]) for each batch of C jobs (image index, crop box)."""
        for start in range(0, len(jobs), self.crops_per_batch):
            chunk = jobs[start : start + self.crops_per_batch]
            batch = torch.cat([self._preprocess(images[k][y0:y1, x0:x1]) for k, (x0, y0, x1, y1) in chunk])
            with self.autocast():
                yield chunk, self.encoder(batch)

    def _preprocess(self, crop: np.ndarray) -> torch.Tensor:
        """Resize the long side to the encoder's size, normalize and pad: [1, 3, S, S]."""
        resized = torch.as_tensor(self.transform.apply_image(crop), device=self.device)
        return self.model.preprocess(resized.permute(2, 0, 1).contiguous()[None])

    def _crop_masks(self, embeddings: torch.Tensor, images, crops: list, layer: int) -> list[tuple[dict, dict | None]]:
        """All kept masks of each crop of `crops` [(image index, crop box)] (embeddings [C, D, h, w]), each
        de-duplicated by box NMS, and its candidates when they are kept, in image coordinates. Their point
        prompts go through the mask decoder points_per_batch at a time, several crops' together when there
        are several."""
        sizes = [(y1 - y0, x1 - x0) for _, (x0, y0, x1, y1) in crops]
        grids = [self.point_grids[layer] * np.array(size)[None, ::-1] for size in sizes]
        crop_of, points = np.repeat(np.arange(len(crops)), [len(g) for g in grids]), np.concatenate(grids)
        decode = self._point_decoder(embeddings, sizes)
        batches = [[] for _ in crops]
        for i in range(0, len(points), self.points_per_batch):
            batch, batch_crops = points[i : i + self.points_per_batch], crop_of[i : i + self.points_per_batch]
            low_res, iou_preds, rows = decode(batch, batch_crops)  # [K*3, h, w], [K*3] of K prompts in full
            rows = rows.cpu().numpy()
            m = self.masks_per_prompt
            for c, (k, box) in enumerate(crops):
                # This crop's prompts among those decoded in full, and their m masks each
                mine = np.flatnonzero(batch_crops[rows] == c)
                masks = (
                    slice(None)
                    if len(crops) == 1
                    else torch.as_tensor((m * mine[:, None] + np.arange(m)).ravel(), device=self.device)
                )
                prompts = torch.as_tensor(batch[rows[mine]].repeat(m, axis=0), device=self.device)
                filtered = self._filter_batch(
                    low_res[masks], iou_preds[masks], prompts, sizes[c], box, images[k].shape[:2]
                )
                batches[c].append(filtered)
        return [self._in_image(concat(b), box) for b, (_, box) in zip(batches, crops)]

    def _in_image(self, data: dict, crop_box: list[int]) -> tuple[dict, dict | None]:
        """One crop's masks past the floors -> (those kept: thresholds and box NMS, and the candidates when
        they are kept), in image coordinates."""
        kept = uncrop(select_crop(data, self.selection), crop_box)
        return kept, uncrop(data, crop_box) if self.keep_candidates else None

    def _box_batch(self, embedding, prompts: np.ndarray, crop_box) -> dict:
        """Decode one mask per box prompt ([B, 5]: XYXY and index) and apply the per-mask filters."""
        crop_size = (crop_box[3] - crop_box[1], crop_box[2] - crop_box[0])
        low_res, iou_preds = self._decode_boxes(embedding, prompts[:, :4], crop_size)  # [B, h, w], [B]
        prompts = torch.as_tensor(prompts, device=self.device)
        return self._filter_batch(low_res, iou_preds, prompts, crop_size, crop_box, crop_size)

    def _filter_batch(self, low_res, iou_preds, points, crop_size, crop_box, image_size) -> dict:
        """Predicted-IoU filter, then the full-resolution filters; `points` [B, ...] are the prompts, kept
        row by row with their masks."""
        # Filter by predicted IoU before upsampling: only survivors are brought to full resolution
        if self.iou_floor > 0:  # 0 turns the filter off (as in SAM)
            keep = iou_preds > self.iou_floor if self.iou_floor_strict else iou_preds >= self.iou_floor
            low_res, iou_preds, points = low_res[keep], iou_preds[keep], points[keep]
        # Upsample in chunks so memory stays bounded on large images
        step = max(1, self.max_upsample_pixels // (crop_size[0] * crop_size[1]))
        return concat(
            [
                self._full_res_filters(
                    low_res[i : i + step],
                    iou_preds[i : i + step],
                    points[i : i + step],
                    crop_size,
                    crop_box,
                    image_size,
                )
                for i in range(0, len(low_res), step)
            ]
        )

    def _full_res_filters(self, low_res, iou_preds, points, crop_size, crop_box, image_size) -> dict:
        """Stability, crop-edge and area filters on masks at crop resolution; RLE of the survivors."""
        input_size = self.input_size(crop_size)
        logits = self.model.postprocess_masks(low_res[:, None], input_size, crop_size)[:, 0]
        # Only a window of each mask can be above the thresholds: on a CPU the filters read each mask's own
        # window (the same figures as on the whole crop); on a GPU one window, the crop, for all at once
        if self.device.type == "cpu":
            lowest = min(self.stability_low, self.model.mask_threshold)
            windows = support_windows(low_res, lowest, self.model.image_encoder.img_size, input_size, crop_size)
        else:
            windows = torch.tensor([[0, crop_size[0], 0, crop_size[1]]], device=self.device).expand(len(logits), 4)
        stability, boxes, areas, masks = window_filters(
            logits, windows, self.stability_low, self.stability_high, self.model.mask_threshold
        )
        # Filter by stability; drop masks touching an inner crop edge, and masks covering most of the image
        height, width = image_size
        keep = ~is_box_near_crop_edge(boxes, crop_box, [0, 0, width, height])
        if self.stability_floor > 0:  # 0 turns the filter off (as in SAM)
            keep &= stability >= self.stability_floor
        if self.max_mask_area_frac is not None:
            keep &= areas < self.max_mask_area_frac * height * width
        rows = torch.nonzero(keep)[:, 0]
        return {
            "rles": encode_uncropped([masks[i] for i in rows.tolist()], windows[rows], crop_box, height, width),
            "boxes": boxes[rows],
            "iou_preds": iou_preds[rows],
            "points": points[rows],
            "stability": stability[rows],
        }

    def _point_decoder(self, embeddings: torch.Tensor, crop_sizes: list):
        """A function: point prompts [B, 2] (crop px) and their crops [B] (sorted indices into crop_sizes and
        embeddings [C, D, h, w]) -> low-res logits [K*3, h, w] and predicted IoU [K*3] of the K prompts with
        a mask that can pass the predicted-IoU filter, and their rows [K]."""
        decoder = self.model.mask_decoder
        if not supports(decoder) or self.use_m2m or self.masks_per_prompt != 3:
            # Another decoder (SAM 2's, a test's scripted one) or SAM 2's options: the model's own, crop by crop
            return lambda points, crops: self._decode(embeddings[0], points, crop_sizes[0])
        shared = None

        def decode(points: np.ndarray, crops: np.ndarray):
            nonlocal shared
            sparse, dense = self._embed_points(points, crops, crop_sizes)
            with self.autocast():
                if shared is None:  # the image side, once per crop
                    pe = self.model.prompt_encoder.get_dense_pe()
                    shared = SharedImageDecoder(decoder, embeddings, pe, dense[:1])
                index = None if len(crop_sizes) == 1 else torch.as_tensor(crops, device=self.device)
                low_res, iou_preds, rows = shared(sparse, self._may_pass, self.decoder_batch, index)
            low_res = low_res[:, 1:].float()  # the 3 multimask outputs
            iou_preds = iou_preds[rows, 1:].float()
            return low_res.flatten(0, 1), iou_preds.flatten(0, 1), rows

        return decode

    def _may_pass(self, iou_preds: torch.Tensor) -> torch.Tensor | None:
        """Predicted IoU [B, 4] -> prompts [B] with a multimask output passing the IoU filter."""
        if self.iou_floor <= 0:
            return torch.ones(len(iou_preds), dtype=torch.bool, device=iou_preds.device)
        iou = iou_preds[:, 1:]
        return (iou > self.iou_floor if self.iou_floor_strict else iou >= self.iou_floor).any(1)

    def _embed_points(
        self, points: np.ndarray, crops: np.ndarray, crop_sizes, masks: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Point prompts [B, 2] in their crops' px (crops [B]: sorted indices into crop_sizes), and optionally
        mask prompts [B, 1, h, w] -> the prompt encoder's sparse [B, 2, D] and dense embeddings."""
        coords = np.concatenate([self.transform.apply_coords(points[crops == c], s) for c, s in enumerate(crop_sizes)])
        coords = torch.as_tensor(coords, device=self.device)
        labels = torch.ones(len(points), dtype=torch.int, device=self.device)
        return self.model.prompt_encoder(points=(coords[:, None], labels[:, None]), boxes=None, masks=masks)

    def _decode(self, embedding, points: np.ndarray, crop_size):
        """Point prompts of one crop -> low-res logits [B*M, h, w], predicted IoU [B*M] and rows [B], with the
        model's own decoder (M: masks_per_prompt); with use_m2m, each mask refined once (_refine)."""
        sparse, dense = self._embed_points(points, np.zeros(len(points), dtype=int), [crop_size])
        low_res, iou_preds = self._model_decoder(embedding, sparse, dense, multimask=self.masks_per_prompt == 3)
        low_res, iou_preds = low_res.flatten(0, 1), iou_preds.flatten(0, 1)
        if self.use_m2m:
            low_res, iou_preds = self._refine(
                embedding, points.repeat(self.masks_per_prompt, axis=0), low_res, crop_size
            )
        rows = torch.arange(len(points), device=self.device)
        return low_res.float(), iou_preds.float(), rows

    def _refine(self, embedding, points: np.ndarray, low_res: torch.Tensor, crop_size):
        """One mask-to-mask step, points_per_batch masks at a time: N masks' points [N, 2] and low-res logits
        [N, h, w] (clamped to +-32, as SAM 2's predictor hands them on) as the mask prompt -> one output each:
        logits [N, h, w], predicted IoU [N]."""
        crops, refined = np.zeros(len(points), dtype=int), []
        for i in range(0, len(points), self.points_per_batch):
            prior = low_res[i : i + self.points_per_batch].clamp(-32.0, 32.0)[:, None]
            batch = slice(i, i + self.points_per_batch)
            sparse, dense = self._embed_points(points[batch], crops[batch], [crop_size], masks=prior)
            refined.append(self._model_decoder(embedding, sparse, dense, multimask=False))
        return torch.cat([logits[:, 0] for logits, _ in refined]), torch.cat([iou[:, 0] for _, iou in refined])

    def _decode_boxes(self, embedding, boxes: np.ndarray, crop_size) -> tuple[torch.Tensor, torch.Tensor]:
        """Box prompts [B, 4] XYXY -> low-res logits [B, h, w] and predicted IoU [B], one mask per box."""
        coords = torch.as_tensor(self.transform.apply_boxes(boxes, crop_size), dtype=torch.float, device=self.device)
        sparse, dense = self.model.prompt_encoder(points=None, boxes=coords, masks=None)
        low_res, iou_preds = self._model_decoder(embedding, sparse, dense, multimask=False)
        return low_res[:, 0].float(), iou_preds[:, 0].float()

    def _model_decoder(self, embedding, sparse, dense, multimask: bool) -> tuple[torch.Tensor, torch.Tensor]:
        """The model's own mask decoder on one crop's embedding: [B, M, h, w] logits, [B, M] predicted IoU."""
        with self.autocast():
            return self.model.mask_decoder(
                image_embeddings=embedding[None],
                image_pe=self.model.prompt_encoder.get_dense_pe(),
                sparse_prompt_embeddings=sparse,
                dense_prompt_embeddings=dense,
                multimask_output=multimask,
            )

    def autocast(self):
        """bfloat16 autocast when bf16_autocast is set, else a no-op context."""
        return torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.bf16_autocast)

    def input_size(self, crop_size) -> tuple[int, int]:
        return self.transform.get_preprocess_shape(crop_size[0], crop_size[1], self.transform.target_length)


def encode_uncropped(masks: list[torch.Tensor], windows: torch.Tensor, crop_box, height: int, width: int) -> list[str]:
    """Masks [h, w] of windows [N, 4] (y0, y1, x0, x1) of a crop -> RLE of the masks placed in the full image."""
    x0, y0 = crop_box[:2]
    # Placed and transposed where the masks are (on a GPU: no CPU copy of the pixels but the one transfer)
    full = torch.zeros(len(masks), width, height, dtype=torch.bool, device=windows.device)
    if len(masks) and (windows == windows[:1]).all():  # one window for all (a GPU's): one copy
        wy0, wy1, wx0, wx1 = windows[0].tolist()
        full[:, x0 + wx0 : x0 + wx1, y0 + wy0 : y0 + wy1] = torch.stack(masks).transpose(1, 2)
    else:
        for placed, mask, (wy0, wy1, wx0, wx1) in zip(full, masks, windows.tolist()):
            placed[x0 + wx0 : x0 + wx1, y0 + wy0 : y0 + wy1] = mask.T
    # On a GPU the runs are found there: only their ends come to the host, not the pixels
    return rle.encode_transposed(full.numpy()) if full.device.type == "cpu" else rle.encode_transposed_runs(full)


def records(data: dict, height: int, width: int) -> dict:
    """Final columns: COCO RLE, area and bbox from the RLE, scores, prompt point, crop box (XYWH)."""
    counts = list(data.get("rles", []))
    if not counts:
        return {f: [] for f in FIELDS}
    crop = data["crop_boxes"].cpu().numpy().astype(float)
    return {
        "segmentation": counts,
        "area": rle.area(counts, height, width).tolist(),
        "bbox": rle.bbox(counts, height, width).tolist(),
        "predicted_iou": data["iou_preds"].float().cpu().tolist(),
        "stability_score": data["stability"].float().cpu().tolist(),
        "point_coords": data["points"].double().cpu().reshape(len(counts), -1, 2).tolist(),  # [N, points, 2]
        "crop_box": np.concatenate([crop[:, :2], crop[:, 2:] - crop[:, :2]], axis=1).tolist(),
    }


def mask_generator(model, **settings) -> MaskGenerator:
    """The generator for `model`: MaskGenerator for a SAM, amg/sam2_generator.py's for a SAM 2.1 image model."""
    if is_sam2(model):
        from data_engine.amg.sam2_generator import Sam2MaskGenerator

        return Sam2MaskGenerator(model, **settings)
    return MaskGenerator(model, **settings)


def image_crops(size, n_layers: int, overlap_ratio: float) -> list[tuple[list[int], int]]:
    """(crop box XYXY, layer) of each crop of an image of `size` (H, W), the full image first; tiny images
    (a few px) give empty crop boxes, which are left out."""
    boxes, layers = generate_crop_boxes(tuple(size), n_layers, overlap_ratio)
    return [(b, i) for b, i in zip(boxes, layers) if b[2] > b[0] and b[3] > b[1]]


def sam_generator_settings(amg: dict, exclude=()) -> dict:
    """The amg settings segment_anything's SamAutomaticMaskGenerator also takes (same names, same meaning),
    for running the reference side by side with this generator."""
    from segment_anything import SamAutomaticMaskGenerator

    shared = inspect.signature(SamAutomaticMaskGenerator).parameters.keys() & amg.keys()
    return {k: amg[k] for k in sorted(shared - set(exclude))}

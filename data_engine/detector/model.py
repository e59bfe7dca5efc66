"""The detector's variants, checkpoints and inference.

Every variant is torchvision's Faster R-CNN with two classes (background and one generic "object"),
built with no downloaded weights (`weights=None`, `weights_backbone=None`) and room for more
detections per image than SA-1B's ~100 masks. A checkpoint of this project holds the variant, its
build settings and the state dict, so `load_detector(path)` needs nothing else.
"""

from __future__ import annotations

from collections import OrderedDict
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torchvision.models.detection import FasterRCNN, fasterrcnn_resnet50_fpn_v2
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.backbone_utils import BackboneWithFPN
from torchvision.models.detection.faster_rcnn import FastRCNNConvFCHead, FastRCNNPredictor
from torchvision.ops.feature_pyramid_network import LastLevelMaxPool

from data_engine.detector.settings import MAX_SIDE, SETTING_BOUNDS, SETTING_KEYS
from data_engine.errors import UserError, is_int, is_number
from data_engine.io.atomic import atomic_path
from data_engine.model.build import check_finite, read_torch_dict

FORMAT = "data_engine.detector/1"  # marks a checkpoint written by save_detector
NUM_CLASSES = 2  # background + one generic "object"


class DetectorCheckpointError(UserError, ValueError):
    """A detector checkpoint is missing, corrupt, or not a detector of this project."""


# ----------------------------------------------------------------------------------------------
# Variants
# ----------------------------------------------------------------------------------------------


def conv_gn(cin: int, cout: int, stride: int) -> nn.Sequential:
    """3x3 convolution, GroupNorm (8 groups: trains from scratch with small batches), ReLU."""
    return nn.Sequential(nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.GroupNorm(8, cout), nn.ReLU(inplace=True))


class SmallBackbone(nn.Sequential):
    """Five GroupNorm conv stages; stage i (1-based) halves the resolution i times.

    [B, 3, H, W] -> c2 [B, 32, H/4, W/4], c3 [B, 64, H/8, W/8], c4 [B, 128, H/16, W/16], c5 [B, 192, H/32, W/32]
    """

    WIDTHS = (16, 32, 64, 128, 192)

    def __init__(self):
        stages, cin = [], 3
        for i, cout in enumerate(self.WIDTHS):
            stages.append((f"c{i + 1}", nn.Sequential(conv_gn(cin, cout, 2), conv_gn(cout, cout, 1))))
            cin = cout
        super().__init__(OrderedDict(stages))


def build_small(
    min_size: int = 320,
    max_size: int = 320,
    box_detections_per_img: int = 300,
    box_batch_size_per_image: int = 128,
    rpn_post_nms_top_n_test: int = 500,
    **kwargs,
) -> FasterRCNN:
    """A CPU-sized Faster R-CNN: the small GroupNorm backbone, a 64-channel FPN on strides 4-32 (+64),
    anchors 8-128 px (half the objects of a synthetic scene at 320 px are under 22 px across), and a GroupNorm
    conv box head. Fewer sampled regions per training image (128,
    torchvision: 512) and proposals at inference (500, torchvision: 1000) than torchvision's defaults
    halve a CPU training step and the time per image."""
    body = SmallBackbone()
    widths = SmallBackbone.WIDTHS[1:]
    backbone = BackboneWithFPN(
        body,
        return_layers={"c2": "0", "c3": "1", "c4": "2", "c5": "3"},
        in_channels_list=list(widths),
        out_channels=64,
        extra_blocks=LastLevelMaxPool(),
    )
    anchors = AnchorGenerator(sizes=((8,), (16,), (32,), (64,), (128,)), aspect_ratios=((0.5, 1.0, 2.0),) * 5)
    box_head = FastRCNNConvFCHead((64, 7, 7), [64, 64], [256], norm_layer=lambda c: nn.GroupNorm(8, c))
    return FasterRCNN(
        backbone,
        min_size=min_size,
        max_size=max_size,
        rpn_anchor_generator=anchors,
        box_head=box_head,
        box_predictor=FastRCNNPredictor(256, NUM_CLASSES),  # num_classes, set here
        box_detections_per_img=box_detections_per_img,
        box_batch_size_per_image=box_batch_size_per_image,
        rpn_post_nms_top_n_test=rpn_post_nms_top_n_test,
        **kwargs,
    )


def build_resnet50_fpn_v2(
    min_size: int = 800, max_size: int = 1333, box_detections_per_img: int = 300, **kwargs
) -> FasterRCNN:
    """torchvision's fasterrcnn_resnet50_fpn_v2 (GPU-sized), all layers trainable, nothing downloaded."""
    return fasterrcnn_resnet50_fpn_v2(
        weights=None,
        weights_backbone=None,
        num_classes=NUM_CLASSES,
        min_size=min_size,
        max_size=max_size,
        box_detections_per_img=box_detections_per_img,
        **kwargs,
    )


VARIANTS = {"small": build_small, "resnet50_fpn_v2": build_resnet50_fpn_v2}


def build_detector(variant: str, **settings) -> nn.Module:
    """A freshly initialised detector; `settings` are FasterRCNN keyword arguments (min_size,
    max_size, box_detections_per_img, box_nms_thresh, ...)."""
    if variant not in VARIANTS:
        raise DetectorCheckpointError(f"unknown detector variant {variant!r}; choose from {sorted(VARIANTS)}")
    return VARIANTS[variant](**settings)


# ----------------------------------------------------------------------------------------------
# Checkpoints
# ----------------------------------------------------------------------------------------------


def save_detector(model: nn.Module, variant: str, settings: dict, path) -> None:
    """Write {format, variant, settings, model: state dict} atomically to `path`."""
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    with atomic_path(path) as tmp:
        torch.save({"format": FORMAT, "variant": variant, "settings": dict(settings), "model": state}, tmp)


def load_detector(path, device=None) -> nn.Module:
    """The detector saved at `path`, in eval mode on `device` (default cpu)."""
    path = Path(path).expanduser()
    saved = read_torch_dict(path, f"detector checkpoint {path}", DetectorCheckpointError, WHAT_TO_DO)
    if saved.get("format") != FORMAT:
        raise DetectorCheckpointError(f"detector checkpoint {path} is {describe(saved)}; {WHAT_TO_DO}")
    check_saved(saved, path)
    model = build_detector(saved["variant"], **saved["settings"])
    load_weights(model, saved["model"], path)
    return model.to(device or "cpu").eval()


def check_saved(saved: dict, path: Path) -> None:
    """A checkpoint of save_detector that can be built: a known variant, valid settings, finite weights."""
    problem = saved_problem(saved)
    if problem:
        raise DetectorCheckpointError(f"detector checkpoint {path} is damaged: {problem}; {WHAT_TO_DO}")
    check_finite(saved["model"], path)  # the SAM checkpoints' check: NaN weights find nothing


def saved_problem(saved: dict) -> str | None:
    """What keeps a checkpoint of save_detector from being built, or None."""
    if not isinstance(saved.get("variant"), str) or saved["variant"] not in VARIANTS:
        return f"its variant {str(saved.get('variant'))[:40]!r} is not one of {sorted(VARIANTS)}"
    if not isinstance(saved.get("model"), dict):
        return f"its model is a {type(saved.get('model')).__name__}, not a state dict"
    if not isinstance(saved.get("settings"), dict):
        return f"its settings are a {type(saved.get('settings')).__name__}, not a mapping"
    problem = settings_problem(saved["settings"])
    return f"settings {problem}" if problem else None


def settings_problem(settings: dict) -> str | None:
    """What is wrong with a detector's build settings (a checkpoint's, or the detector.* keys), or None."""
    unknown = sorted(map(str, set(settings) - set(SETTING_KEYS)))
    if unknown:
        return f"{unknown[0]}: not a detector setting (known: {list(SETTING_KEYS)})"
    for key, (low, high) in SETTING_BOUNDS.items():
        value = settings.get(key)
        if key in settings and not (is_int(value) and low <= value <= high):
            return f"{key}: must be an integer in [{low}, {high}], got {str(value)[:40]}"
    nms = settings.get("box_nms_thresh", 0.5)
    if not (is_number(nms) and 0 <= nms <= 1):
        return f"box_nms_thresh: must be a number in [0, 1], got {str(nms)[:40]}"
    if settings.get("min_size", 1) > settings.get("max_size", MAX_SIDE):
        return f"min_size: must not exceed max_size ({settings['max_size']}), got {settings['min_size']}"
    return None


WHAT_TO_DO = "pass the model.pt written by stage=detector (detector.checkpoint=DET/model.pt)"


def describe(saved: dict) -> str:
    """What a foreign checkpoint looks like, for the error message."""
    state = saved.get("model", saved)
    keys = [k for k in state if isinstance(k, str)] if isinstance(state, dict) else []
    if any(k.startswith(("image_encoder.", "mask_decoder.")) for k in keys):
        return "a SAM checkpoint (pass it as model.checkpoint), not a detector"
    if any(k.startswith(("backbone.", "rpn.", "roi_heads.")) for k in keys):
        return "a plain torchvision detector state dict without the variant and settings of this project"
    return "not a detector checkpoint of this project"


def load_weights(model: nn.Module, state: dict, path: Path) -> None:
    """Load a state dict with one summarised error when it does not fit the architecture."""
    own = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    got = {k: tuple(v.shape) for k, v in state.items() if isinstance(v, torch.Tensor)}
    missing, unexpected = own.keys() - got.keys(), got.keys() - own.keys()
    wrong = [k for k in own.keys() & got.keys() if own[k] != got[k]]
    if missing or unexpected or wrong:
        first = sorted(missing)[:1] or sorted(unexpected)[:1] or sorted(wrong)[:1]
        raise DetectorCheckpointError(
            f"detector checkpoint {path} does not fit the architecture: {len(missing)} tensors missing, "
            f"{len(unexpected)} unexpected, {len(wrong)} of another shape (first: {first[0]}); "
            "check that it was trained for this detector.variant"
        )
    model.load_state_dict(state)


def read_start_weights(path, variant: str) -> dict:
    """The state dict to start training from: a checkpoint of save_detector (of the same variant), a
    training checkpoint ({'model': ...}), or a user's plain torchvision state dict for `variant`."""
    path = Path(path).expanduser()
    saved = read_torch_dict(path, f"detector checkpoint {path}", DetectorCheckpointError, WHAT_TO_DO)
    if saved.get("format") == FORMAT:
        check_saved(saved, path)
    if saved.get("format") == FORMAT and saved["variant"] != variant:
        raise DetectorCheckpointError(
            f"detector checkpoint {path} is a {saved['variant']!r} detector, not {variant!r}; "
            f"pass detector.variant={saved['variant']} or another checkpoint"
        )
    state = saved.get("model", saved)
    if not isinstance(state, dict) or not any(isinstance(v, torch.Tensor) for v in state.values()):
        raise DetectorCheckpointError(f"detector checkpoint {path} holds no state dict; {WHAT_TO_DO}")
    if any(isinstance(k, str) and k.startswith(("image_encoder.", "mask_decoder.")) for k in state):
        raise DetectorCheckpointError(f"detector checkpoint {path} is {describe(state)}; {WHAT_TO_DO}")
    check_finite(state, path)
    return state


# ----------------------------------------------------------------------------------------------
# Inference
# ----------------------------------------------------------------------------------------------


@torch.no_grad()
def detect(model: nn.Module, image: np.ndarray, score_thresh: float = 0.05) -> tuple[np.ndarray, np.ndarray]:
    """Boxes of one [H, W, 3] uint8 RGB image: ([N, 4] float32 XYXY in image pixels, [N] float32 scores),
    highest score first, only scores >= score_thresh."""
    # The model's own score floor would hide boxes the caller asks for: lower it for this call
    device = next(model.parameters()).device
    heads, floor, training = model.roi_heads, model.roi_heads.score_thresh, model.training
    heads.score_thresh = min(floor, score_thresh)
    try:
        pixels = torch.from_numpy(np.ascontiguousarray(image)).to(device).permute(2, 0, 1).float() / 255  # [3, H, W]
        out = model.eval()([pixels])[0]
    finally:
        heads.score_thresh = floor
        model.train(training)
    # Keep the requested scores, best first
    scores = out["scores"].float().cpu().numpy()
    boxes = out["boxes"].float().cpu().numpy()
    keep = np.flatnonzero(scores >= score_thresh)
    order = keep[np.argsort(-scores[keep], kind="stable")]
    return boxes[order].astype(np.float32).reshape(-1, 4), scores[order].astype(np.float32)

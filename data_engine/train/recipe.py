"""The SAM training recipe on one batch: simulated prompts, iterative correction clicks, losses.

Per mask: a first prompt (a point sampled uniformly inside the mask, or its box with noise) gives 3
masks, and only the best of them (lowest loss) is trained, so the 3 outputs specialise on
subpart / part / whole. Then each correction click is sampled uniformly from the error region of the
previous prediction (a positive click on a missed pixel, a negative one on a false pixel); it is added to
the earlier clicks and the previous low-res logits are fed back as the mask prompt; the single-mask
output is trained on those. Mask loss: focal 20 : dice 1; the IoU head: mean-squared error against the
true IoU of the trained (best) output, as SAM 2's training code does by default (to match SAM, its
comment says), or of every output
(`all_iou`, the embedded model's earlier recipe: it pulls predictions of ambiguous prompts down).
With the image's other masks given (`context`), a point prompt's IoU target is the best IoU with any
mask that contains the point, the drawn one included: a point on a part is also a fair prompt for the
subpart under it and the whole around it, which is the ambiguity the 3 outputs stand for.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from segment_anything.modeling import Sam

from data_engine.model.build import is_sam2
from data_engine.train.settings import Train

FOCAL_GAMMA = 2.0  # no alpha balancing: with tiny objects in the frame, alpha=0.25 collapsed to empty masks


def focal_loss(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """[..., H, W] logits and {0, 1} targets -> [...] mean sigmoid focal loss per mask."""
    prob = logits.sigmoid()
    ce = F.binary_cross_entropy_with_logits(logits, target, reduction="none")
    p_t = prob * target + (1 - prob) * (1 - target)
    return (ce * (1 - p_t) ** FOCAL_GAMMA).flatten(-2).mean(-1)


def dice_loss(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """[..., H, W] -> [...] soft dice loss per mask."""
    prob = logits.sigmoid().flatten(-2)
    target = target.flatten(-2)
    return 1 - (2 * (prob * target).sum(-1) + 1) / (prob.sum(-1) + target.sum(-1) + 1)


def logits_iou(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """[..., H, W] -> [...] IoU of the binarised prediction (logit > 0) with the target."""
    pred = (logits > 0).flatten(-2)
    target = target.flatten(-2) > 0.5
    inter = (pred & target).sum(-1).float()
    union = (pred | target).sum(-1).float()
    return torch.where(union > 0, inter / union.clamp(min=1), torch.ones_like(inter))


def sample_points(region: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """[K, S, S] bool -> [K, 2] (x, y) pixels sampled uniformly inside each region (the prompt encoder
    adds the half-pixel offset itself)."""
    k, s, _ = region.shape
    scores = torch.rand(k, s * s, generator=generator, device=region.device) * region.flatten(1)
    index = scores.argmax(1)
    return torch.stack([index % s, index // s], dim=1).float()


def noisy_boxes(masks: torch.Tensor, generator: torch.Generator, max_noise: float) -> torch.Tensor:
    """[K, S, S] bool -> [K, 4] XYXY boxes (inclusive pixel indices, as SAM's mask-to-box), each coordinate
    jittered by 10% of the side (capped)."""
    ys = masks.any(2)
    xs = masks.any(1)
    s = masks.shape[-1]
    idx = torch.arange(s, device=masks.device)
    x0 = torch.where(xs, idx, s).min(1).values
    x1 = torch.where(xs, idx, -1).max(1).values
    y0 = torch.where(ys, idx, s).min(1).values
    y1 = torch.where(ys, idx, -1).max(1).values
    boxes = torch.stack([x0, y0, x1, y1], 1).float()
    side = torch.stack([x1 - x0, y1 - y0, x1 - x0, y1 - y0], 1).float()
    noise = torch.randn(boxes.shape, generator=generator, device=masks.device) * 0.1 * side
    return (boxes + noise.clamp(-max_noise, max_noise)).clamp(0, s)


def first_prompts(masks: torch.Tensor, generator: torch.Generator, box_prob: float, max_box_noise: float):
    """Point or box per mask: returns (coords [K, 1, 2], labels [K, 1], boxes [K, 4], use_box [K])."""
    k = masks.shape[0]
    coords = sample_points(masks, generator)[:, None]
    labels = torch.ones(k, 1, device=masks.device)
    use_box = torch.rand(k, generator=generator, device=masks.device) < box_prob
    return coords, labels, noisy_boxes(masks, generator, max_box_noise), use_box


def decode(sam: Sam, embedding: torch.Tensor, points, boxes, mask_input, multimask: bool):
    """One decoder pass for K prompts on one image: ([K, M, h, w] low-res logits, [K, M] IoU)."""
    if is_sam2(sam):
        sparse, dense = sam.encode_prompts(points=points, boxes=boxes, masks=mask_input)
        return sam.decode(embedding[None], sparse, dense, multimask)
    sparse, dense = sam.prompt_encoder(points=points, boxes=boxes, masks=mask_input)
    return sam.mask_decoder(
        image_embeddings=embedding[None],
        image_pe=sam.prompt_encoder.get_dense_pe(),
        sparse_prompt_embeddings=sparse,
        dense_prompt_embeddings=dense,
        multimask_output=multimask,
    )


def upscale(low_res: torch.Tensor, size: int) -> torch.Tensor:
    """[K, M, h, w] low-res logits -> [K, M, S, S] logits in the model's input frame."""
    return F.interpolate(low_res, (size, size), mode="bilinear", align_corners=False)


def output_losses(
    logits: torch.Tensor,
    iou_pred: torch.Tensor,
    target: torch.Tensor,
    weights: tuple[float, float],
    iou_target: torch.Tensor | None = None,
) -> tuple:
    """Per output: ([K, M] mask loss, [K, M] IoU-head MSE, [K, M] true IoU, focal, dice). The MSE is
    taken against `iou_target` when given, else against the true IoU with `target`."""
    t = target[:, None].float().expand_as(logits)
    focal, dice = focal_loss(logits, t), dice_loss(logits, t)
    true_iou = logits_iou(logits.detach(), t)
    head_target = true_iou if iou_target is None else iou_target
    return weights[0] * focal + weights[1] * dice, (iou_pred - head_target) ** 2, true_iou, focal, dice


@torch.no_grad()
def containing_iou(logits: torch.Tensor, points: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
    """[K, M, S, S] logits, [K, 2] (x, y) prompt points, [N, S, S] every mask of the image -> [K, M]:
    each output's best IoU with a mask that contains its prompt point (0 where none does)."""
    k, m = logits.shape[:2]
    pred = (logits > 0).flatten(2).flatten(0, 1).float()  # [K*M, S*S]
    ctx = context.flatten(1).float()  # [N, S*S]
    inter = pred @ ctx.T  # [K*M, N]
    union = pred.sum(1, keepdim=True) + ctx.sum(1)[None] - inter
    iou = (inter / union.clamp(min=1)).view(k, m, -1)
    x, y = points[:, 0].long(), points[:, 1].long()
    contains = context[:, y, x].T  # [K, N]
    return (iou * contains[:, None]).amax(2)


def coarse_masks(masks: torch.Tensor, prompt_size: tuple[int, int], cell: int = 8) -> torch.Tensor:
    """[K, S, S] bool -> [K, 1, *prompt_size] blocky low-res logits: the masks seen at `cell` px per block."""
    blocks = F.avg_pool2d(masks[:, None].float(), cell)  # [K, 1, S/cell, S/cell]
    return 8.0 * (F.interpolate(blocks, prompt_size, mode="nearest") - 0.3)


def image_loss(
    sam: Sam,
    embedding: torch.Tensor,
    masks: torch.Tensor,
    generator: torch.Generator,
    recipe: dict,
    context: torch.Tensor | None = None,
) -> tuple[torch.Tensor, dict]:
    """Loss of one image's K masks over the first prompt and the correction clicks (mean per pass).

    With probability recipe['coarse_mask_prob'] the first prompt also carries a blocky version of the
    mask as the mask prompt (a refinement task). Correction clicks follow the mask's interior point
    (also for masks first prompted with a box) and the earlier clicks.
    """
    size = masks.shape[-1]
    stats = {"loss": 0.0, "focal": 0.0, "dice": 0.0, "iou_mse": 0.0, "iou": 0.0}
    coords, labels, boxes, use_box = first_prompts(masks, generator, recipe["box_prob"], 20 * size / 1024)
    coarse = None
    coarse_prob = recipe["coarse_mask_prob"]
    if coarse_prob > 0 and torch.rand(1, generator=generator, device=masks.device).item() < coarse_prob:
        coarse = coarse_masks(masks, tuple(sam.prompt_encoder.mask_input_size))
    total, low_res = first_pass(sam, embedding, masks, (coords, labels), boxes, use_box, coarse, recipe, stats, context)
    # Correction clicks: sampled from the error region, previous logits fed back as the mask prompt
    previous = upscale(low_res, size)[:, 0] > 0
    for _ in range(recipe["correction_clicks"]):
        coords, labels = add_click(coords, labels, previous, masks, generator)
        lr, iou_pred = decode(sam, embedding, (coords, labels), None, low_res, multimask=False)
        logits = upscale(lr, size)
        mask_l, iou_l, true_iou, focal, dice = output_losses(logits, iou_pred, masks, recipe["weights"])
        total = total + mask_l.sum() + recipe["iou_weight"] * iou_l.sum()
        accumulate(stats, mask_l[:, 0], iou_l[:, 0], true_iou[:, 0], focal[:, 0], dice[:, 0], recipe["iou_weight"])
        low_res, previous = lr.detach(), logits[:, 0].detach() > 0
    passes = len(masks) * (1 + recipe["correction_clicks"])
    return total / passes, {k: v / passes for k, v in stats.items()}


def first_pass(sam, embedding, masks, points, boxes, use_box, coarse, recipe, stats, context=None) -> tuple:
    """3 outputs per first prompt, mask loss on the best one, IoU loss on it too (or on all 3 with
    recipe['all_iou']; against containing_iou for point prompts when context is given); returns (summed loss,
    [K, 1, h, w] best low-res logits, detached). Point- and box-prompted masks are decoded separately."""
    size = masks.shape[-1]
    total = 0.0
    low_res = torch.zeros(len(masks), 1, *sam.prompt_encoder.mask_input_size, device=masks.device)
    for is_box in (False, True):
        rows = (use_box == is_box).nonzero()[:, 0]
        if len(rows) == 0:
            continue
        prompt = (None, boxes[rows]) if is_box else ((points[0][rows], points[1][rows]), None)
        lr, iou_pred = decode(sam, embedding, *prompt, None if coarse is None else coarse[rows], multimask=True)
        logits = upscale(lr, size)
        iou_target = None
        if context is not None and not is_box:  # context holds the drawn masks too
            iou_target = containing_iou(logits, points[0][rows][:, 0], context)
        mask_l, iou_l, true_iou, focal, dice = output_losses(
            logits, iou_pred, masks[rows], recipe["weights"], iou_target
        )
        best, pick = mask_l.argmin(1), torch.arange(len(rows))
        iou_term = iou_l.mean(1) if recipe["all_iou"] else iou_l[pick, best]
        total = total + mask_l[pick, best].sum() + recipe["iou_weight"] * iou_term.sum()
        low_res[rows] = lr[pick, best][:, None].detach()
        accumulate(
            stats,
            mask_l[pick, best],
            iou_term,
            true_iou[pick, best],
            focal[pick, best],
            dice[pick, best],
            recipe["iou_weight"],
        )
    return total, low_res


def add_click(coords, labels, previous: torch.Tensor, masks: torch.Tensor, generator: torch.Generator):
    """Append one click per mask: positive on a missed pixel, negative on a false one."""
    error = previous ^ masks
    region = torch.where(error.flatten(1).any(1)[:, None, None], error, masks)
    point = sample_points(region, generator)
    x, y = point[:, 0].long(), point[:, 1].long()
    positive = masks[torch.arange(len(masks)), y, x].float()
    return torch.cat([coords, point[:, None]], 1), torch.cat([labels, positive[:, None]], 1)


@torch.no_grad()
def accumulate(stats: dict, mask_l, iou_l, true_iou, focal, dice, iou_weight: float) -> None:
    """Per-pass sums for the log: `loss` is what is optimized (IoU MSE weighted), `iou_mse` the MSE itself."""
    stats["loss"] += float((mask_l + iou_weight * iou_l).sum())
    stats["focal"] += float(focal.sum())
    stats["dice"] += float(dice.sum())
    stats["iou_mse"] += float(iou_l.sum())
    stats["iou"] += float(true_iou.sum())


def batch_loss(
    sam: Sam,
    images: list[torch.Tensor],
    masks: list[torch.Tensor],
    generator: torch.Generator,
    recipe: dict,
    train_encoder: bool,
    contexts: list[torch.Tensor] | None = None,
) -> tuple[torch.Tensor, dict]:
    """Mean loss over a batch: one encoder pass for all images, then the prompts of each image
    (`recipe`: recipe_of's keys; `contexts`: every mask of each image, for point prompts' IoU targets;
    see containing_iou)."""
    device = sam.device
    x = torch.cat([sam.preprocess(im.to(device).float()[None]) for im in images])  # [B, 3, S, S]
    with torch.set_grad_enabled(train_encoder and torch.is_grad_enabled()):
        embeddings = sam.embed(x) if is_sam2(sam) else sam.image_encoder(x)  # [B, D, h, w]
    losses, stats = [], []
    for i, (embedding, target) in enumerate(zip(embeddings, masks)):
        context = None if contexts is None else contexts[i].to(device)
        loss, s = image_loss(sam, embedding, target.to(device), generator, recipe, context)
        losses.append(loss)
        stats.append(s)
    return torch.stack(losses).mean(), {k: sum(s[k] for s in stats) / len(stats) for k in stats[0]}


def recipe_of(train: Train) -> dict:
    """The recipe's settings for a batch from the `train` config section."""
    return dict(
        box_prob=train.box_prob,
        correction_clicks=train.correction_clicks,
        coarse_mask_prob=train.coarse_mask_prob,
        weights=(train.focal_weight, train.dice_weight),
        all_iou=train.supervise_all_iou,
        iou_weight=train.iou_weight,
    )

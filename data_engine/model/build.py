"""Build SAM models: the official ViT variants from a checkpoint, the embedded `tiny` model, and SAM 2.1's
Hiera variants (model/sam2_model.py; the `sam2` package is imported only when one is built)."""

from __future__ import annotations

import hashlib
import os
import urllib.request
from functools import partial
from pathlib import Path

import torch
from segment_anything.modeling import ImageEncoderViT, MaskDecoder, PromptEncoder, Sam, TwoWayTransformer

from data_engine.errors import UserError
from data_engine.io.atomic import atomic_path, sha256_file
from data_engine.model.tiny_decoder import HighResMaskDecoder
from data_engine.model.tiny_encoder import PATCH as HYBRID_PATCH
from data_engine.model.tiny_encoder import HybridEncoder

EMBEDDED_TINY = Path(__file__).parent / "weights" / "sam_tiny.pt"

# Official checkpoints: file name, download URL, SHA-256 of the file.
OFFICIAL = {
    "vit_h": ("sam_vit_h_4b8939.pth", "a7bf3b02f3ebf1267aba913ff637d9a2d5c33d3173bb679e46d9f338c26f262e"),
    "vit_l": ("sam_vit_l_0b3195.pth", "3adcc4315b642a4d2101128f611684e8734c41232a17c648ed1693702a49a622"),
    "vit_b": ("sam_vit_b_01ec64.pth", "ec2df62732614e57411cdcf32a23ffdf28910380d03139ee0f4fcbe91eb8c912"),
    "sam2.1_hiera_t": ("sam2.1_hiera_tiny.pt", "7402e0d864fa82708a20fbd15bc84245c2f26dff0eb43a4b5b93452deb34be69"),
    "sam2.1_hiera_s": ("sam2.1_hiera_small.pt", "6d1aa6f30de5c92224f8172114de081d104bbd23dd9dc5c58996f0cad5dc4d38"),
    "sam2.1_hiera_b+": (
        "sam2.1_hiera_base_plus.pt",
        "a2345aede8715ab1d5d31b4a509fb160c5a4af1970f199d9054ccfb746c004c5",
    ),
    "sam2.1_hiera_l": ("sam2.1_hiera_large.pt", "2647878d5dfa5098f2f8649825738a9345572bae2d4350a2468587ece47dd318"),
}
OFFICIAL_URL = "https://dl.fbaipublicfiles.com/segment_anything/"
SAM2_URL = "https://dl.fbaipublicfiles.com/segment_anything_2/092824/"

# Architectures: the three official ones (SAM's ViT encoders) and the tiny embedded one, whose encoder
# has convolution stages before its ViT blocks (model/tiny_encoder.py) and whose decoder reads their
# stride-2 and stride-4 features (model/tiny_decoder.py).
OFFICIAL_SHARED = dict(img_size=1024, patch_size=16, window=14, prompt_dim=256, decoder_depth=2, decoder_mlp=2048,
                       decoder_heads=8, iou_hidden=256)  # fmt: skip
ARCHS = {
    "vit_h": dict(**OFFICIAL_SHARED, embed_dim=1280, depth=32, heads=16, global_attn=(7, 15, 23, 31)),
    "vit_l": dict(**OFFICIAL_SHARED, embed_dim=1024, depth=24, heads=16, global_attn=(5, 11, 17, 23)),
    "vit_b": dict(**OFFICIAL_SHARED, embed_dim=768, depth=12, heads=12, global_attn=(2, 5, 8, 11)),
    # 256 px input, convolution stages of 32/64/128 channels at strides 2/4/8, 4 ViT blocks at width 192
    # on the 32x32 grid, 128x128 low-res masks; about 3.8M parameters.
    "tiny": dict(
        img_size=256,
        patch_size=8,
        embed_dim=192,
        depth=4,
        heads=6,
        global_attn=(1, 3),
        window=8,
        prompt_dim=128,
        decoder_depth=2,
        decoder_mlp=512,
        decoder_heads=4,
        iou_hidden=128,
        conv_widths=(32, 64, 128),
        conv_blocks=(1, 2, 2),
    ),  # fmt: skip
}
# SAM 2.1's image models (Hiera encoders), built from the sam2 package's config files (model/sam2_model.py)
SAM2 = ("sam2.1_hiera_t", "sam2.1_hiera_s", "sam2.1_hiera_b+", "sam2.1_hiera_l")
VARIANTS = (*ARCHS, *SAM2)


class CheckpointError(UserError, RuntimeError):
    """A checkpoint is missing, unreadable, or does not fit the chosen variant."""


def is_sam2(model) -> bool:
    """Whether `model` is a SAM 2.1 image model (model/sam2_model.Sam2Image), without importing sam2."""
    return getattr(model, "family", "sam") == "sam2"


def default_device() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


def build_sam(
    variant: str,
    checkpoint: str | os.PathLike | None = None,
    device: str | None = None,
    download: bool = False,
    cache_dir: str | os.PathLike | None = None,
    image_size: int | None = None,
) -> Sam:
    """Build a `segment_anything.modeling.Sam` (or for SAM 2.1 a model/sam2_model.Sam2Image) in eval mode.

    - `vit_h`, `vit_l`, `vit_b` and the `sam2.1_hiera_*` variants: weights come from `checkpoint`, or with
      `download=True` from the official URL into `cache_dir` (SHA-256 verified).
    - `tiny`: weights from `checkpoint`, else the embedded file, else seeded initial weights.
    `image_size`: SAM 2.1's input side (None: 1024, what its weights were trained at).
    """
    if variant not in VARIANTS:
        raise ValueError(f"unknown model variant {variant!r}; choose one of {sorted(VARIANTS)}")
    sam = seeded_sam(variant, image_size=image_size)
    path = resolve_checkpoint(variant, checkpoint, download, cache_dir)
    if path is not None:
        load_checkpoint(sam, variant, path)
    return sam.to(device or default_device()).eval()


def seeded_sam(variant: str, seed: int = 0, image_size: int | None = None) -> Sam:
    """The architecture of `variant` with deterministic initial weights."""
    # Seed a private generator state so building a model never disturbs the caller's RNG
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return make_model(variant, image_size)


def make_model(variant: str, image_size: int | None = None) -> Sam:
    """The architecture of `variant` with its initial weights (from the global RNG)."""
    if variant in SAM2:
        from data_engine.model.sam2_model import make_sam2

        return make_sam2(variant, image_size)
    if image_size is not None:
        raise ValueError(f"image_size is a SAM 2.1 setting; model variant {variant!r} has a fixed input size")
    return make_sam(**ARCHS[variant])


def make_sam(
    img_size,
    patch_size,
    embed_dim,
    depth,
    heads,
    global_attn,
    window,
    prompt_dim,
    decoder_depth,
    decoder_mlp,
    decoder_heads,
    iou_hidden,
    conv_widths=None,
    conv_blocks=None,
) -> Sam:
    embedding_size = img_size // patch_size
    vit_args = dict(img_size=img_size, embed_dim=embed_dim, depth=depth, num_heads=heads, out_chans=prompt_dim,
                    global_attn_indexes=global_attn, window_size=window)  # fmt: skip
    if conv_widths:
        # The hybrid encoder's stride is fixed by its three stride-2 stages; the prompt encoder's grid must match it
        if patch_size != HYBRID_PATCH:
            raise ValueError(
                f"an architecture with conv_widths has stride {HYBRID_PATCH}: "
                f"set patch_size={HYBRID_PATCH}, not {patch_size}"
            )
        encoder = HybridEncoder(conv_widths=conv_widths, conv_blocks=conv_blocks, **vit_args)
    else:
        norm = partial(torch.nn.LayerNorm, eps=1e-6)
        encoder = ImageEncoderViT(patch_size=patch_size, mlp_ratio=4, qkv_bias=True, norm_layer=norm, use_rel_pos=True,
                                  **vit_args)  # fmt: skip
    prompt_encoder = PromptEncoder(
        embed_dim=prompt_dim,
        image_embedding_size=(embedding_size, embedding_size),
        input_image_size=(img_size, img_size),
        mask_in_chans=16,
    )
    decoder_args = dict(
        num_multimask_outputs=3,
        transformer=TwoWayTransformer(
            depth=decoder_depth, embedding_dim=prompt_dim, mlp_dim=decoder_mlp, num_heads=decoder_heads
        ),
        transformer_dim=prompt_dim,
        iou_head_depth=3,
        iou_head_hidden_dim=iou_hidden,
    )
    decoder = HighResMaskDecoder(patch_size=patch_size, **decoder_args) if conv_widths else MaskDecoder(**decoder_args)
    return Sam(
        image_encoder=encoder,
        prompt_encoder=prompt_encoder,
        mask_decoder=decoder,
        pixel_mean=[123.675, 116.28, 103.53],
        pixel_std=[58.395, 57.12, 57.375],
    )


def resolve_checkpoint(variant, checkpoint, download, cache_dir) -> Path | None:
    """The file to load for `variant`, or None for seeded weights."""
    if checkpoint:
        return Path(checkpoint).expanduser()
    if variant == "tiny":
        return EMBEDDED_TINY if EMBEDDED_TINY.exists() else None
    if download:
        return download_official(variant, cache_dir)
    raise CheckpointError(
        f"model variant {variant!r} needs a checkpoint: pass model.checkpoint=/path/to/{OFFICIAL[variant][0]} "
        f"(or model.download=true on a machine with internet access)"
    )


def load_checkpoint(sam: Sam, variant: str, path: Path) -> None:
    """Load a state dict (or a training checkpoint holding one) with one clear error on failure."""
    state = read_state(path, variant)
    check_state_fits(sam, state, variant, path)
    check_finite(state, path)
    sam.load_state_dict(state)


def check_finite(state: dict, path: Path) -> None:
    """Refuse weights holding NaN or infinity: such a model runs and finds nothing."""
    bad = [k for k, v in state.items() if torch.is_tensor(v) and v.is_floating_point() and not v.isfinite().all()]
    if bad:
        raise CheckpointError(
            f"checkpoint {path} holds non-finite weights (NaN or infinity) in {len(bad)} of {len(state)} tensors, "
            f"first {bad[0]}; the training run that wrote it diverged: use an earlier checkpoint"
        )


def read_state(path: Path, variant: str) -> dict:
    """The state dict in a checkpoint file (or in a training checkpoint's 'model'), or a CheckpointError."""
    saved = read_torch_dict(path, f"checkpoint {path} for model variant {variant!r}", CheckpointError)
    state = saved.get("model", saved)
    if not isinstance(state, dict):
        raise CheckpointError(f"checkpoint {path} for model variant {variant!r} holds no state dict")
    return state


def read_torch_dict(path: Path, what: str, error: type[Exception], what_to_do: str = "") -> dict:
    """The dict a torch file holds (loaded on the CPU, tensors only: weights_only), or `error` saying, after
    `what` (e.g. "detector checkpoint PATH"), why there is none and then `what_to_do`. The one reader of the
    project's checkpoint files: SAM's, the detector's, the verifier's."""
    tail = f"; {what_to_do}" if what_to_do else ""
    if not Path(path).is_file():
        raise error(f"{what} does not exist{tail}")
    try:
        saved = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises many types for corrupt or foreign files
        raise error(
            f"{what} could not be read ({reason(err)}): the file is corrupt or not a PyTorch checkpoint{tail}"
        ) from None
    if not isinstance(saved, dict):
        raise error(f"{what} holds a {type(saved).__name__}, not a dict{tail}")
    return saved


def reason(err: Exception, limit: int = 80) -> str:
    """The error's type, with the first line of its message when that is short (torch's long ones
    advise on `weights_only`, which does not help with a corrupt file)."""
    lines = str(err).strip().splitlines()
    first = lines[0] if lines else ""
    return f"{type(err).__name__}: {first}" if first and len(first) <= limit else type(err).__name__


def check_state_fits(sam: Sam, state: dict, variant: str, path: Path) -> None:
    """Raise one summarised error when the state dict does not match the architecture."""
    expected = {k: tuple(v.shape) for k, v in sam.state_dict().items()}
    got = {k: tuple(v.shape) for k, v in state.items() if hasattr(v, "shape")}
    missing = expected.keys() - got.keys()
    unexpected = got.keys() - expected.keys()
    wrong = [k for k in expected.keys() & got.keys() if expected[k] != got[k]]
    if missing or unexpected or wrong:
        guess = guess_variant(got)
        hint = (
            f"; it looks like a {guess!r} checkpoint"
            if guess
            else f"; it fits none of this version's variants ({', '.join(VARIANTS)}): load it with the "
            f"data_engine version that trained it (the tiny architecture changed when its encoder gained "
            f"convolution stages)"
        )
        raise CheckpointError(
            f"checkpoint {path} does not fit model variant {variant!r}: {len(missing)} missing, "
            f"{len(unexpected)} unexpected and {len(wrong)} mis-shaped tensors{hint}"
        )


def guess_variant(shapes: dict) -> str | None:
    """Which known architecture a state dict's shapes match, if any."""
    for name in VARIANTS:
        ref = {k: tuple(v.shape) for k, v in seeded_sam_shapes(name).items()}
        if ref == shapes:
            return name
    return None


def seeded_sam_shapes(variant: str) -> dict:
    # Meta-device build: shapes without allocating the big variants' memory (sam2's Hiera reads values
    # while it is built, so SAM 2.1's variants are built on the CPU: seconds, on this error path only)
    if variant in SAM2:
        return make_model(variant).state_dict()
    with torch.device("meta"):
        return make_model(variant).state_dict()


def download_official(variant: str, cache_dir) -> Path:
    """Fetch an official checkpoint into the cache folder and verify its SHA-256."""
    name, digest = OFFICIAL[variant]
    url = (SAM2_URL if variant in SAM2 else OFFICIAL_URL) + name
    folder = Path(cache_dir or "~/.cache/data_engine").expanduser()
    target = folder / name
    if target.exists() and sha256_file(target) == digest:
        return target
    with atomic_path(target) as partial_file:
        try:
            urllib.request.urlretrieve(url, partial_file)
        except OSError as err:
            raise CheckpointError(
                f"could not download {url} ({err}); this machine may be offline: download the "
                f"file elsewhere and pass model.checkpoint=/path/to/{name}"
            ) from None
        if sha256_file(partial_file) != digest:
            raise CheckpointError(f"downloaded {name} has the wrong SHA-256; the file was discarded")
    return target


def model_checksum(sam: Sam) -> str:
    """SHA-256 over the model's tensors: identifies the weights actually used."""
    h = hashlib.sha256()
    for key, value in sorted(sam.state_dict().items()):
        h.update(key.encode())
        h.update(value.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


def model_record(m: dict) -> dict:
    """Variant and weight checksum of the model section's model, recorded with a run and checked on resume;
    a bad checkpoint fails here, before any worker starts."""
    path = resolve_checkpoint(m["variant"], m["checkpoint"], m["download"], m["cache_dir"])
    sam = seeded_sam(m["variant"], image_size=m.get("image_size"))
    if path is None:
        return {"variant": m["variant"], "checkpoint": None, "sha256": model_checksum(sam)}
    load_checkpoint(sam, m["variant"], path)
    return {"variant": m["variant"], "checkpoint": str(path), "sha256": sha256_file(path)}


def model_args(m: dict) -> dict:
    """build_sam's arguments from the model section (image_size: SAM 2.1's only)."""
    return {k: m.get(k) for k in ("variant", "checkpoint", "download", "cache_dir", "image_size")}

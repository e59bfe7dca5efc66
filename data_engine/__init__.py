"""data_engine: SA-1B-style segmentation dataset generation with SAM.

From Python: `run(stage, overrides, **keys)` runs a stage as the CLI does; `Dataset.open(folder)` reads
what a stage wrote; `MaskGenerator(build_sam("tiny"), **settings).generate(image)` is the automatic
stage's generator on one image. Each is imported on first use (no torch or pyarrow at package import).
"""

__version__ = "0.1.0"


def build_sam(variant, checkpoint=None, device=None, **kwargs):
    """See data_engine.model.build.build_sam (imported lazily: no torch import at package import)."""
    from data_engine.model.build import build_sam as _build

    return _build(variant, checkpoint=checkpoint, device=device, **kwargs)


def run(stage: str, overrides=(), **keys) -> dict:
    """See data_engine.cli.run: a stage run from Python with the CLI's config and checks; its summary."""
    from data_engine.cli import run as _run

    return _run(stage, list(overrides), **keys)


def __getattr__(name: str):
    """Dataset and MaskGenerator, imported when first asked for."""
    if name == "Dataset":
        from data_engine.io.dataset import Dataset

        return Dataset
    if name == "MaskGenerator":
        from data_engine.amg.generator import MaskGenerator

        return MaskGenerator
    raise AttributeError(f"module 'data_engine' has no attribute {name!r}")

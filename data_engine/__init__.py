"""data_engine: SA-1B-style segmentation dataset generation with SAM."""

__version__ = "0.1.0"


def build_sam(variant, checkpoint=None, device=None, **kwargs):
    """See data_engine.model.build.build_sam (imported lazily: no torch import at package import)."""
    from data_engine.model.build import build_sam as _build

    return _build(variant, checkpoint=checkpoint, device=device, **kwargs)

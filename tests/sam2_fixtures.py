"""SAM 2.1 test models: the smallest Hiera (sam2.1_hiera_t) with seeded random weights at a small input."""

import pytest
import torch

SIDE = 256  # input side of the test models (the official weights: 1024); a multiple of 32
VARIANT = "sam2.1_hiera_t"


@pytest.fixture(scope="module")
def sam2_model():
    """Seeded weights, with the last layer of each mask token's hypernetwork centred over its outputs and
    scaled 30x: as initialised, every mask's logits lie within +-0.3 of a positive mean, so all masks are
    the whole image and no logit reaches the stability offsets; these spread them to about +-3."""
    from data_engine.model.build import seeded_sam

    model = seeded_sam(VARIANT, image_size=SIDE).eval()
    with torch.no_grad():
        for mlp in model.sam_mask_decoder.output_hypernetworks_mlps:
            last = mlp.layers[-1]
            last.weight.sub_(last.weight.mean(0, keepdim=True)).mul_(30)
            last.bias.sub_(last.bias.mean()).mul_(30)
    return model


@pytest.fixture(scope="module")
def sam2_checkpoint(tmp_path_factory, sam2_model):
    """The seeded weights as an official checkpoint file holds them: {'model': state dict}."""
    path = tmp_path_factory.mktemp("sam2") / "sam2.1_hiera_tiny_seeded.pt"
    torch.save({"model": sam2_model.state_dict()}, path)
    return path

"""A class-agnostic box detector (torchvision's Faster R-CNN, one generic "object" class) trained on
masks: the semi-automatic stage's source of box prompts."""

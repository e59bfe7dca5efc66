"""Stage 2, semi-automatic: detector boxes prompt SAM, the confident masks are prefilled for annotators,
and the annotators' result is merged back with a record of what they kept, edited, deleted and added.

- prefill.py: one image's prefilled masks (detector -> box NMS -> SAM through the automatic filters).
- preannotations.py: those masks as files annotation tools open (Label Studio, CVAT XML, COCO).
- merge.py: annotators' masks matched to the prefilled ones, image by image.
"""

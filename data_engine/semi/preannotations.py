"""Prefilled masks as files annotation tools open, one file per format for the whole run.

- labelstudio: `labelstudio_tasks.json`, a list of tasks whose `predictions` hold one brush region
  (Label Studio's RLE) per mask, and `labelstudio_config.xml`, the labeling config they fit (an Image
  named "image", BrushLabels named "tag" with the label "object"). Images are referenced as
  `image_url` + file name; the stage's default is `local_files_url(input folder)`, Label Studio's
  local-files serving with its document root at the input folder's parent.
- cvat_xml: `cvat_annotations.xml`, CVAT for images 1.1 with one <mask> per prefilled mask (upload it
  to a task holding the same images with "Upload annotations", format "CVAT 1.1").
- coco: `coco_instances.json`, COCO instances with RLE segmentations, image ids 1..N in file-name
  order (the dataset's ids kept as `dataset_image_id`).

Every ok image of the run is listed, with or without masks, so annotators can draw on all of them.
Masks the verifier accepted (`extra.route`, stage=semi with verifier.checkpoint) are left out: only
the masks sent for review are shown.
The same writers with kind="annotations" write masks as a finished annotation in that format (what
an annotator's export looks like: the simulated annotator's result, tests).
"""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from pathlib import Path
from urllib.parse import quote

import numpy as np

from data_engine.importers import labelstudio_rle
from data_engine.importers.coco import coco_annotation, label_of
from data_engine.io import coco, rle
from data_engine.io.atomic import write_bytes_atomic, write_json_atomic, write_text_atomic
from data_engine.io.dataset import Dataset
from data_engine.verifier.routes import ACCEPTED, route_of

FILES = {"labelstudio": "labelstudio_tasks.json", "cvat_xml": "cvat_annotations.xml", "coco": "coco_instances.json"}
KINDS = ("predictions", "annotations")
MODEL_VERSION = "data_engine semi prefill"
LABEL = "object"
LABEL_CONFIG = """<View>
  <Image name="image" value="$image" zoom="true"/>
  <BrushLabels name="tag" toName="image">
    <Label value="object"/>
  </BrushLabels>
</View>
"""


def write_preannotations(dataset: str | Path, out_dir: str | Path, formats, image_url: str) -> dict:
    """Write the run's prefilled masks in each of `formats`, but those the verifier accepted (they skip
    review); returns {format: path}."""
    images, masks = Dataset.open(dataset, "semi prefill", needs=("masks", "images")).by_image()
    masks = {name: [r for r in rows if route_of(r) != ACCEPTED] for name, rows in masks.items()}
    written = {}
    for fmt in formats:
        path = Path(out_dir) / FILES[fmt]
        WRITERS[fmt](images, masks, path, image_url=image_url)
        written[fmt] = str(path)
    if "labelstudio" in formats:
        write_text_atomic(LABEL_CONFIG, Path(out_dir) / "labelstudio_config.xml")
    return written


# Label Studio


def local_files_url(image_root: str | Path) -> str:
    """The URL prefix under which Label Studio serves the images of image_root as local files, with
    LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT at image_root's parent and a local-files storage at image_root
    (Label Studio refuses a storage at the document root itself)."""
    return f"/data/local-files/?d={quote(Path(image_root).name)}/"


def write_labelstudio(images, masks, path, image_url: str = "", kind="predictions") -> None:
    tasks = [
        labelstudio_task(k + 1, img, masks.get(img["file_name"], []), image_url, kind) for k, img in enumerate(images)
    ]
    write_json_atomic(tasks, path, indent=None)


def labelstudio_task(task_id: int, image: dict, rows: list[dict], image_url: str, kind: str) -> dict:
    """One task: the image reference, and its masks as brush regions of a prediction or an annotation."""
    name = image["file_name"]
    result = [brush_region(f"m{j}", row) for j, row in enumerate(rows)]
    task = {
        "id": task_id,
        "data": {"image": image_url + quote(name) if image_url else name},
        "meta": {"file_name": name, "image_id": str(image["image_id"])},
    }
    if kind == "predictions":
        scores = [r["predicted_iou"] for r in rows if r.get("predicted_iou") is not None]
        score = float(np.mean(scores)) if scores else None
        task["predictions"] = [{"model_version": MODEL_VERSION, "score": score, "result": result}]
    else:
        task["annotations"] = [{"id": task_id, "result": result, "was_cancelled": False}]
    return task


def brush_region(region_id: str, row: dict) -> dict:
    """A mask row as a Label Studio brush result (RLE of the RGBA canvas)."""
    mask = rle.decode(row["segmentation"], row["height"], row["width"])
    region = {
        "id": region_id,
        "type": "brushlabels",
        "from_name": "tag",
        "to_name": "image",
        "original_width": row["width"],
        "original_height": row["height"],
        "image_rotation": 0,
        "value": {"format": "rle", "rle": labelstudio_rle.encode_mask(mask), "brushlabels": [LABEL]},
    }
    if row.get("predicted_iou") is not None:
        region["score"] = float(row["predicted_iou"])
    return region


# CVAT for images 1.1


def write_cvat_xml(images, masks, path, image_url: str = "", kind="predictions") -> None:
    root = ET.Element("annotations")
    ET.SubElement(root, "version").text = "1.1"
    task = ET.SubElement(ET.SubElement(root, "meta"), "task")
    for key, value in (("name", MODEL_VERSION), ("size", str(len(images))), ("mode", "annotation")):
        ET.SubElement(task, key).text = value
    label = ET.SubElement(ET.SubElement(task, "labels"), "label")
    ET.SubElement(label, "name").text = LABEL
    ET.SubElement(label, "type").text = "mask"
    source = "semi-auto" if kind == "predictions" else "manual"
    for k, img in enumerate(images):
        node = ET.SubElement(
            root, "image", id=str(k), name=img["file_name"], width=str(img["width"]), height=str(img["height"])
        )
        for z, row in enumerate(masks.get(img["file_name"], [])):
            ET.SubElement(node, "mask", label=LABEL, source=source, occluded="0", z_order=str(z), **cvat_mask(row))
    ET.indent(root)
    write_bytes_atomic(ET.tostring(root, encoding="utf-8", xml_declaration=True), path)


def cvat_mask(row: dict) -> dict:
    """A mask row as CVAT's mask attributes: run lengths over its box, row-major, background first."""
    mask = rle.decode(row["segmentation"], row["height"], row["width"])
    ys, xs = np.nonzero(mask)
    top, left = int(ys.min()), int(xs.min())
    crop = mask[top : ys.max() + 1, left : xs.max() + 1].ravel()
    # Run boundaries; a leading empty background run when the first pixel is foreground
    change = np.flatnonzero(crop[1:] != crop[:-1]) + 1
    runs = np.diff(np.r_[0, change, len(crop)]).tolist()
    if crop[0]:
        runs = [0] + runs
    height, width = int(ys.max()) + 1 - top, int(xs.max()) + 1 - left
    return {
        "rle": ", ".join(map(str, runs)),
        "left": str(left),
        "top": str(top),
        "width": str(width),
        "height": str(height),
    }


# COCO


def write_coco(images, masks, path, image_url: str = "", kind="predictions") -> None:
    image_ids = {img["file_name"]: k + 1 for k, img in enumerate(images)}
    rows = [row for img in images for row in masks.get(img["file_name"], [])]
    categories, category_ids = coco.categories(sorted({label_of(r) for r in rows} | {LABEL}))
    coco_images = [
        coco.image_entry(img, image_ids[img["file_name"]], dataset_image_id=img["image_id"]) for img in images
    ]
    annotations = [
        {**coco_annotation(n + 1, row, image_ids, category_ids), "extra": json.loads(row["extra"] or "null")}
        for n, row in enumerate(rows)
    ]
    coco.write(path, coco_images, annotations, categories)


WRITERS = {"labelstudio": write_labelstudio, "cvat_xml": write_cvat_xml, "coco": write_coco}

"""Check a release folder without trusting it: manifest, checksums, tar members, every JSON and mask.

Tars are walked header by header here rather than with `tarfile`, so a crafted tar is judged from its
512-byte headers alone: only regular files named `sa_<id>.jpg` / `sa_<id>.json` of bounded size are
read, into memory, never onto disk; links, long-name and pax headers, `../` names and members that run
past the end of the file are problems, not instructions. RLE counts are parsed and checked to cover
exactly height x width pixels before pycocotools decodes them.
"""

from __future__ import annotations

import io
import json
import re
from pathlib import Path

from PIL import Image

from data_engine.errors import UserError
from data_engine.io import rle
from data_engine.io.atomic import sha256_file
from data_engine.io.inputs import leaves_root
from data_engine.release.manifest import TAR_NAME

MEMBER = re.compile(rb"sa_(\d{1,19})\.(jpg|json)")
MAX_JSON_BYTES = 64 << 20
MAX_JPEG_BYTES = 256 << 20
MAX_MANIFEST_BYTES = 64 << 20
MAX_PIXELS = 1 << 28
MAX_MEMBERS = 2_000_000
MAX_PROBLEMS = 1000
ANNOTATION_KEYS = {"id", "segmentation", "bbox", "area", "predicted_iou", "stability_score", "crop_box", "point_coords"}
BLOCK = 512


class ReleaseInvalid(UserError, ValueError):
    """The release failed verification; the message is the one-line verdict."""


class Problems(list):
    """Problems found, capped in memory; `total` keeps counting."""

    total = 0

    def add(self, message: str) -> None:
        self.total += 1
        if len(self) < MAX_PROBLEMS:
            self.append(message)


def verify_release(folder: Path) -> dict:
    """{"verdict": one line, "problems": [...], "tars", "images", "masks"} for the release in `folder`."""
    problems = Problems()
    entries = read_manifest(folder, problems)
    counted = {"images": 0, "masks": 0}
    ids: set[int] = set()
    for entry in entries:
        images, masks = check_tar(folder / entry["file"], entry, ids, problems)
        counted["images"] += images
        counted["masks"] += masks
    verdict = f"release {folder}: "
    if problems.total:
        shown = "; ".join(problems[:3])
        verdict += f"INVALID, {problems.total} problem(s): {shown}" + ("; ..." if problems.total > 3 else "")
    else:
        verdict += f"ok ({len(entries)} tars, {counted['images']} images, {counted['masks']} masks checked)"
    return {"verdict": verdict, "problems": list(problems), "tars": len(entries), **counted}


# ---------------------------------------------------------------------------------------------
# Manifest
# ---------------------------------------------------------------------------------------------


def read_manifest(folder: Path, problems: Problems) -> list[dict]:
    """The manifest's tar entries whose fields are well-formed; every other mismatch becomes a problem."""
    path = folder / "manifest.json"
    if not path.is_file():
        problems.add(f"no manifest.json in {folder}")
        return []
    if path.stat().st_size > MAX_MANIFEST_BYTES:
        problems.add(f"manifest.json is over {MAX_MANIFEST_BYTES} bytes")
        return []
    try:
        doc = json.loads(path.read_bytes())
        tars = doc["tars"]
        assert isinstance(tars, list)
    except Exception as err:
        problems.add(f"manifest.json is not a release manifest ({type(err).__name__})")
        return []
    entries = [t for t in tars if well_formed(t, problems)]
    names = [t["file"] for t in entries]
    if len(set(names)) != len(names):
        problems.add("manifest.json lists a tar more than once")
    on_disk = sorted(p.name for p in folder.glob("sa_*.tar"))
    for name in sorted(set(on_disk) - set(names)):
        problems.add(f"{name} is not in manifest.json")
    for key in ("images", "masks"):
        if doc.get(key) != sum(t[key] for t in entries):
            problems.add(f"manifest.json: total {key} {doc.get(key)!r} is not the sum over its tars")
    return entries


def well_formed(entry, problems: Problems) -> bool:
    ok = (
        isinstance(entry, dict)
        and isinstance(entry.get("file"), str)
        and TAR_NAME.fullmatch(entry["file"]) is not None
        and isinstance(entry.get("sha256"), str)
        and all(type(entry.get(k)) is int and entry[k] >= 0 for k in ("bytes", "images", "masks"))
    )
    if not ok:
        problems.add(f"manifest.json: malformed tar entry {str(entry)[:80]}")
    return ok


# ---------------------------------------------------------------------------------------------
# Tars
# ---------------------------------------------------------------------------------------------


def check_tar(path: Path, entry: dict, ids: set[int], problems: Problems) -> tuple[int, int]:
    """Checksum, then every member; returns (images, masks) found, compared with the manifest entry."""
    name = path.name
    if leaves_root(path, path.parent):
        problems.add(f"{name} is a symlink to a path outside the release folder; a release holds its own tars")
        return 0, 0
    if not path.is_file():
        problems.add(f"{name} is listed in manifest.json but missing")
        return 0, 0
    if sha256_file(path) != entry["sha256"]:
        problems.add(f"{name}: SHA-256 differs from manifest.json")
    if path.stat().st_size != entry["bytes"]:
        problems.add(f"{name}: {path.stat().st_size} bytes, manifest.json says {entry['bytes']}")
    images, masks = check_members(path, entry, ids, problems)
    if (images, masks) != (entry["images"], entry["masks"]):
        problems.add(
            f"{name}: {images} images and {masks} masks, manifest.json says {entry['images']} and {entry['masks']}"
        )
    return images, masks


def check_members(path: Path, entry: dict, ids: set[int], problems: Problems) -> tuple[int, int]:
    """Walk the tar's members in pairs (sa_<id>.jpg then sa_<id>.json); returns (images, masks) that passed."""
    images = masks = 0
    jpeg_size = None  # (id, (w, h)) of the JPEG awaiting its JSON
    with open(path, "rb") as f:
        for name, kind, image_id, data in members(f, path.name, path.stat().st_size, entry, problems):
            if kind == "jpg":
                if jpeg_size is not None:
                    problems.add(f"{path.name}: sa_{jpeg_size[0]}.jpg has no JSON after it")
                jpeg_size = (image_id, jpeg_dimensions(data, f"{path.name}:{name}", problems))
                continue
            if jpeg_size is None or jpeg_size[0] != image_id:
                problems.add(f"{path.name}:{name} does not follow its image sa_{image_id}.jpg")
                jpeg_size = None
                continue
            found = check_document(data, image_id, jpeg_size[1], ids, f"{path.name}:{name}", problems)
            jpeg_size = None
            if found is not None:
                images, masks = images + 1, masks + found
    if jpeg_size is not None:
        problems.add(f"{path.name}: sa_{jpeg_size[0]}.jpg has no JSON after it")
    return images, masks


def members(f, where: str, file_size: int, entry: dict, problems: Problems):
    """Yield (name, kind, image id, bytes) of each acceptable member; stop at the end block or a bad header."""
    offset, seen = 0, 0
    limit = min(MAX_MEMBERS, 2 * entry["images"] + 2)
    while True:
        f.seek(offset)
        header = f.read(BLOCK)
        if len(header) < BLOCK:
            problems.add(f"{where}: ends without the end-of-archive block")
            return
        if header == bytes(BLOCK):
            return
        seen += 1
        if seen > limit:
            problems.add(f"{where}: more members than its manifest entry's {entry['images']} images allow")
            return
        parsed = parse_header(header)
        if isinstance(parsed, str):
            problems.add(f"{where}: member {seen}: {parsed}")
            return
        raw_name, size = parsed
        data_end = offset + BLOCK + size
        if data_end > file_size:
            problems.add(f"{where}: member {raw_name[:60]!r} claims {size} bytes, past the end of the file")
            return
        match = MEMBER.fullmatch(raw_name)
        cap = MAX_JPEG_BYTES if match and match.group(2) == b"jpg" else MAX_JSON_BYTES
        if match is None:
            problems.add(f"{where}: unexpected member {raw_name[:60]!r} (only sa_<id>.jpg and sa_<id>.json)")
        elif size > cap:
            problems.add(f"{where}: member {raw_name.decode()} is {size} bytes, over {cap}")
        else:
            f.seek(offset + BLOCK)
            yield raw_name.decode(), match.group(2).decode(), int(match.group(1)), f.read(size)
        offset = offset + BLOCK + -(-size // BLOCK) * BLOCK


def parse_header(header: bytes) -> tuple[bytes, int] | str:
    """(name, size) of a USTAR regular-file header, or why it is not one."""
    stored = octal(header[148:156])
    if stored is None or stored != sum(header[:148]) + 8 * 32 + sum(header[156:]):
        return "header checksum does not match"
    if header[156:157] not in (b"0", b"\0"):
        return f"type {header[156:157]!r} is not a regular file (links, pax and long-name headers are refused)"
    if header[345:500].strip(b"\0"):
        return "name prefix field is set (release members have short names)"
    size = octal(header[124:136])
    if size is None:
        return "size field is not an octal number"
    return header[:100].split(b"\0", 1)[0], size


def octal(field: bytes) -> int | None:
    text = field.strip(b"\0 ")
    if not text or not all(48 <= c <= 55 for c in text):
        return None if text else 0
    return int(text, 8)


def jpeg_dimensions(data: bytes, where: str, problems: Problems) -> tuple[int, int] | None:
    """(width, height) from the JPEG header; the pixels are not decoded."""
    try:
        with Image.open(io.BytesIO(data)) as img:
            if img.format != "JPEG":
                problems.add(f"{where} is {img.format}, not JPEG")
                return None
            return img.size
    except Exception as err:
        problems.add(f"{where} is not a readable JPEG ({type(err).__name__})")
        return None


# ---------------------------------------------------------------------------------------------
# Per-image documents and masks
# ---------------------------------------------------------------------------------------------


def check_document(data: bytes, image_id: int, jpeg_size, ids: set[int], where: str, problems: Problems) -> int | None:
    """Check one sa_<id>.json against its JPEG; returns its number of masks, or None when unusable."""
    try:
        doc = json.loads(data)
        image, annotations = doc["image"], doc["annotations"]
        h, w = image["height"], image["width"]
        assert isinstance(annotations, list) and type(h) is int and type(w) is int
    except Exception as err:
        problems.add(f"{where}: not an SA-1B image document ({type(err).__name__})")
        return None
    expected = {"image_id": image_id, "file_name": f"sa_{image_id}.jpg"}
    for key, value in expected.items():
        if image.get(key) != value:
            problems.add(f"{where}: image.{key} is {image.get(key)!r}, expected {value!r}")
    if jpeg_size is not None and tuple(jpeg_size) != (w, h):
        problems.add(f"{where}: image is {w}x{h} but its JPEG is {jpeg_size[0]}x{jpeg_size[1]}")
    if not (0 < h and 0 < w and h * w <= MAX_PIXELS):
        problems.add(f"{where}: image size {w}x{h} is out of range")
        return None
    for ann in annotations:
        try:
            check_annotation(ann, h, w, ids, where, problems)
        except Exception as err:  # a crafted value of an unexpected type
            problems.add(f"{where}: malformed annotation ({type(err).__name__})")
    return len(annotations)


def check_annotation(ann, h: int, w: int, ids: set[int], where: str, problems: Problems) -> None:
    """Keys, a unique id, an RLE of the image's size that decodes, and area and bbox equal to the RLE's."""
    if not isinstance(ann, dict) or set(ann) != ANNOTATION_KEYS:
        problems.add(f"{where}: annotation keys are not SA-1B's {sorted(ANNOTATION_KEYS)}")
        return
    if type(ann["id"]) is not int or ann["id"] in ids:
        problems.add(f"{where}: annotation id {ann['id']!r} is not a unique integer")
    else:
        ids.add(ann["id"])
    seg = ann["segmentation"]
    if not isinstance(seg, dict) or seg.get("size") != [h, w] or not isinstance(seg.get("counts"), str):
        problems.add(f"{where}: annotation {ann['id']}: segmentation size is not the image's [{h}, {w}]")
        return
    runs = rle.parse_counts(seg["counts"])
    if runs is None or (runs < 0).any() or int(runs.sum()) != h * w:
        problems.add(f"{where}: annotation {ann['id']}: RLE counts do not cover {h}x{w} pixels")
        return
    mask = rle.decode(seg["counts"], h, w)
    area, box = int(mask.sum()), rle.bbox([seg["counts"]], h, w)[0].tolist()
    if mask.shape != (h, w) or ann["area"] != area or ann["bbox"] != box:
        problems.add(
            f"{where}: annotation {ann['id']}: area {ann['area']!r} and bbox {ann['bbox']!r} are not the mask's "
            f"{area} and {box}"
        )

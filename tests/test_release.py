"""stage=release: downsampling, mask alignment, privacy blur and its sidecar, the SA-1B tar format, rerun
byte identity, and the verifier (good, tampered and crafted releases)."""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path

import cv2
import numpy as np
import pytest
from pycocotools import mask as mask_utils

from data_engine.config import compose
from data_engine.errors import ConfigError, UserError
from data_engine.io import rle
from data_engine.io.dataset import mask_row, write_shard
from data_engine.io.inputs import image_id
from data_engine.io.rle import parse_counts
from data_engine.release.blur import BlurError, PrivacyBlur
from data_engine.release.downsample import released_size, resize_image, resize_mask, scale_box, scale_points
from data_engine.release.verify import verify_release
from data_engine.stages import run_stage

skimage_data = pytest.importorskip("skimage.data")

SMALL = ["runtime=serial", "runtime.progress=false"]
CASCADES = {"face": "haarcascade_frontalface_default.xml", "plate": "haarcascade_russian_plate_number.xml"}


# ---------------------------------------------------------------------------------------------
# Exact shapes drawn at any resolution: sampled at pixel centres of a continuous picture
# ---------------------------------------------------------------------------------------------

# (kind, parameters in units of the original picture's pixels)
SHAPES = [
    ("ellipse", (150.0, 120.0, 90.0, 60.0, 0.3)),
    ("ellipse", (420.0, 300.0, 40.0, 25.0, -0.7)),
    ("rect", (300.0, 90.0, 160.0, 50.0, 0.45)),
    ("ring", (180.0, 330.0, 70.0, 35.0)),
    ("ellipse", (520.0, 90.0, 14.0, 11.0, 0.0)),  # small: under 400 released px
]


def draw(shape, height: int, width: int, scale: float) -> np.ndarray:
    """[H, W] bool: pixel centres (x + 0.5, y + 0.5) / scale inside the shape."""
    ys, xs = np.mgrid[0:height, 0:width]
    x, y = (xs + 0.5) / scale, (ys + 0.5) / scale
    kind, p = shape
    if kind == "ring":
        r = np.hypot(x - p[0], y - p[1])
        return (r <= p[2]) & (r >= p[3])
    cx, cy, a, b, angle = p
    u = (x - cx) * np.cos(angle) + (y - cy) * np.sin(angle)
    v = -(x - cx) * np.sin(angle) + (y - cy) * np.cos(angle)
    if kind == "ellipse":
        return (u / a) ** 2 + (v / b) ** 2 <= 1
    return (np.abs(u) <= a / 2) & (np.abs(v) <= b / 2)


def picture(masks: list[np.ndarray]) -> np.ndarray:
    """[H, W, 3] uint8: a grey background with each mask painted in its own colour."""
    image = np.full((*masks[0].shape, 3), 90, np.uint8)
    for i, m in enumerate(masks):
        image[m] = ((60 * i + 200) % 256, (110 * i + 40) % 256, (170 * i + 120) % 256)
    return image


# ---------------------------------------------------------------------------------------------
# Downsampling and alignment
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "size, shortest, expected",
    [
        ((3300, 4950), 1500, (1500, 2250)),  # SA-1B's average photo
        ((4950, 3300), 1500, (2250, 1500)),
        ((1700, 1801), 1500, (1500, 1589)),
        ((1500, 4000), 1500, (1500, 4000)),  # at the limit: unchanged
        ((512, 512), 1500, (512, 512)),  # never upscaled
    ],
)
def test_released_size(size, shortest, expected):
    assert released_size(*size, shortest) == expected


def test_resized_masks_line_up_with_exact_masks_at_released_size():
    h, w, scale = 450, 600, 2 / 3  # shortest side 450 -> 300
    size = released_size(h, w, 300)
    assert size == (300, 400)
    checked = []
    for shape in SHAPES:
        original = draw(shape, h, w, 1.0)
        released = rle.decode(resize_mask(rle.encode(original[None])[0], h, w, size), *size)
        exact = draw(shape, *size, scale)
        if exact.sum() >= 400:
            checked.append(rle.mask_iou(released, exact))
    assert len(checked) == 4
    assert min(checked) >= 0.95, checked
    # The released pixels carry the same objects: each exact mask's pixels keep its colour's majority
    image = resize_image(picture([draw(s, h, w, 1.0) for s in SHAPES]), size)
    assert image.shape == (*size, 3)


def test_unchanged_size_keeps_masks_and_pixels():
    mask = draw(SHAPES[0], 200, 300, 1.0)
    counts = rle.encode(mask[None])[0]
    assert resize_mask(counts, 200, 300, (200, 300)) == counts
    image = picture([mask])
    assert resize_image(image, (200, 300)) is image


def test_boxes_and_points_scale_to_the_released_grid():
    assert scale_box([0, 0, 4950, 3300], 2250 / 4950, 1500 / 3300) == [0.0, 0.0, 2250.0, 1500.0]
    assert scale_box([1650, 1100, 1650, 1100], 0.5, 0.5) == [825.0, 550.0, 825.0, 550.0]
    assert scale_points([[100.5, 30.0]], 0.5, 0.5) == [[50.25, 15.0]]
    assert scale_box(None, 0.5, 0.5) is None and scale_points(None, 0.5, 0.5) is None


# ---------------------------------------------------------------------------------------------
# Privacy blur
# ---------------------------------------------------------------------------------------------


def sharpness(image: np.ndarray, box, margin: int = 4) -> float:
    """Variance of the Laplacian inside the box, away from its edges (where a blurred box meets sharp pixels)."""
    x, y, w, h = box
    lap = cv2.Laplacian(cv2.cvtColor(image, cv2.COLOR_RGB2GRAY), cv2.CV_64F)
    return float(lap[y + margin : y + h - margin, x + margin : x + w - margin].var())


def test_face_is_blurred_and_nothing_else_changes():
    photo = skimage_data.astronaut()  # [512, 512, 3], one frontal face near (220, 110)
    blurred, boxes = PrivacyBlur(cascades=CASCADES)(photo)
    faces = [b["box"] for b in boxes if b["kind"] == "face"]
    assert len(faces) == 1
    x, y, w, h = faces[0]
    assert x < 220 < x + w and y < 110 < y + h  # the box holds the face
    # Inside: the face's detail is gone
    assert sharpness(blurred, faces[0]) < 0.2 * sharpness(photo, faces[0])
    # Outside every box: pixel-equal
    outside = np.ones(photo.shape[:2], bool)
    for b in boxes:
        bx, by, bw, bh = b["box"]
        outside[by : by + bh, bx : bx + bw] = False
    assert np.array_equal(blurred[outside], photo[outside])
    assert not np.array_equal(blurred, photo)


def test_blur_strength_is_a_setting():
    photo = skimage_data.astronaut()
    weak, boxes = PrivacyBlur(cascades=CASCADES, strength=0.02)(photo)
    strong, _ = PrivacyBlur(cascades=CASCADES, strength=0.3)(photo)
    box = boxes[0]["box"]
    assert sharpness(strong, box) < sharpness(weak, box) < sharpness(photo, box)


def test_detector_none_changes_nothing():
    photo = skimage_data.astronaut()
    same, boxes = PrivacyBlur(detector="none", cascades=CASCADES)(photo)
    assert boxes == [] and np.array_equal(same, photo)


def test_missing_cascade_is_a_user_error():
    with pytest.raises(BlurError, match="release.blur.cascades.face"):
        PrivacyBlur(cascades={"face": "no_such_cascade.xml"})


# ---------------------------------------------------------------------------------------------
# A small dataset to release: exact shapes on a large picture, and the astronaut (a face)
# ---------------------------------------------------------------------------------------------

# Shrunk for speed: release.shortest_side=540 plays SA-1B's 1500 (the CLI test below uses 1500 itself)
SHORTEST = 540
BIG = (720, 960)  # shortest side 720 > 540: released at 540 x 720; the 512-px face photo is kept as it is
BIG_SCALE = 1.6


def make_dataset(root: Path) -> tuple[Path, Path]:
    """(dataset folder, image folder): big.png with exact masks, face.png with one mask; run.json names the root."""
    images_dir, dataset = root / "images_in", root / "dataset"
    images_dir.mkdir(parents=True)
    shapes = [draw(s, *BIG, BIG_SCALE) for s in SHAPES]
    cv2.imwrite(str(images_dir / "big.png"), cv2.cvtColor(picture(shapes), cv2.COLOR_RGB2BGR))
    photo = skimage_data.astronaut()
    cv2.imwrite(str(images_dir / "face.png"), cv2.cvtColor(photo, cv2.COLOR_RGB2BGR))
    rows, masks = [], []
    for name, (h, w), drawn in [("big.png", BIG, shapes), ("face.png", (512, 512), [draw(SHAPES[0], 512, 512, 1.0)])]:
        image = {"image_id": image_id(name), "file_name": name, "height": h, "width": w}
        counts = rle.encode(np.stack(drawn))
        for c in counts:
            masks.append(
                mask_row(
                    image,
                    c,
                    stage="auto",
                    source="auto",
                    model="test",
                    predicted_iou=0.9,
                    stability_score=0.97,
                    point_coords=[[w / 3, h / 4]],
                    crop_box=[0.0, 0.0, float(w), float(h)],
                )
            )
        rows.append({**image, "status": "ok", "error": None, "num_masks": len(counts), "seconds": 0.0})
    # An assisted mask on the face image: not released by default
    masks.append(mask_row(rows[1], masks[-1]["segmentation"], stage="assisted", source="test"))
    rows.append({"image_id": 7, "file_name": "gone.png", "height": 9, "width": 9, "status": "failed"})
    write_shard(dataset, "shard-000000000", masks, rows)
    (dataset / "run.json").write_text(json.dumps({"input_root": str(images_dir)}))
    return dataset, images_dir


@pytest.fixture(scope="module")
def released(tmp_path_factory):
    """A dataset and its release (one image per tar), made once for the tests that read it."""
    root = tmp_path_factory.mktemp("release")
    dataset, images_dir = make_dataset(root)
    cfg = release_cfg(dataset, root / "rel")
    summary = run_stage(cfg)
    return {"root": root, "dataset": dataset, "images": images_dir, "out": root / "rel", "summary": summary}


def release_cfg(dataset: Path, out: Path, *overrides: str) -> dict:
    return compose(
        [
            *SMALL,
            "stage=release",
            f"release.data=[{dataset}]",
            "release.images_per_tar=1",
            f"release.shortest_side={SHORTEST}",
            f"output.dir={out}",
            *overrides,
        ]
    )


def read_tar(path: Path) -> dict[str, bytes]:
    with tarfile.open(path) as tar:
        return {m.name: tar.extractfile(m).read() for m in tar.getmembers()}


def release_files(out: Path) -> dict[str, bytes]:
    """What a user downloads (tars, manifest) and the blur sidecars: every byte that must not change."""
    paths = [*out.glob("sa_*.tar"), out / "manifest.json", *(out / "blur").glob("*.json")]
    return {p.relative_to(out).as_posix(): p.read_bytes() for p in paths}


def test_release_writes_tars_manifest_and_summary(released):
    out, summary = released["out"], released["summary"]
    assert sorted(p.name for p in out.glob("*.tar")) == ["sa_000000.tar", "sa_000001.tar"]
    manifest = json.loads((out / "manifest.json").read_text())
    assert [t["file"] for t in manifest["tars"]] == ["sa_000000.tar", "sa_000001.tar"]
    assert manifest["images"] == 2 and manifest["masks"] == 6  # the failed image and the assisted mask stay out
    for t in manifest["tars"]:
        assert t["sha256"] == release_stage_sha(out / t["file"])
    assert summary["images"] == 2 and summary["masks"] == 6 and summary["images_downsampled"] == 1
    assert summary["images_blurred"] >= 1 and summary["boxes_by_kind"].get("face", 0) >= 1
    assert summary["shards_failed"] == {} and summary["images_failed"] == 0


def release_stage_sha(path: Path) -> str:
    import hashlib

    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_documents_have_sa1b_keys_and_masks_decode_to_the_image_size(released):
    out = released["out"]
    seen = 0
    for tar in sorted(out.glob("sa_*.tar")):
        files = read_tar(tar)
        names = list(files)
        assert [n.rsplit(".", 1)[1] for n in names] == ["jpg", "json"] * (len(names) // 2)
        for name in names[1::2]:
            doc = json.loads(files[name])
            img = doc["image"]
            assert set(img) == {"image_id", "width", "height", "file_name"}
            assert img["file_name"] == f"sa_{img['image_id']}.jpg" == name.replace(".json", ".jpg")
            pixels = cv2.imdecode(np.frombuffer(files[img["file_name"]], np.uint8), cv2.IMREAD_COLOR)
            assert pixels.shape[:2] == (img["height"], img["width"])
            for ann in doc["annotations"]:
                assert set(ann) == {
                    "id",
                    "segmentation",
                    "bbox",
                    "area",
                    "predicted_iou",
                    "stability_score",
                    "crop_box",
                    "point_coords",
                }
                m = mask_utils.decode({"size": ann["segmentation"]["size"], "counts": ann["segmentation"]["counts"]})
                assert m.shape == (img["height"], img["width"])
                assert ann["area"] == int(m.sum())
                assert ann["crop_box"] == [0.0, 0.0, float(img["width"]), float(img["height"])]
                seen += 1
    assert seen == 6


def test_released_masks_line_up_with_the_released_pixels(released):
    h, w = released_size(*BIG, SHORTEST)
    assert (h, w) == (540, 720)
    files = next(f for f in map(read_tar, released["out"].glob("sa_*.tar")) if f"sa_{image_id('big.png')}.jpg" in f)
    doc = json.loads(next(v for k, v in files.items() if k.endswith(".json")))
    assert (doc["image"]["height"], doc["image"]["width"]) == (h, w)
    scale = w / 600
    ious = []
    for shape, ann in zip(SHAPES, doc["annotations"]):
        exact = draw(shape, h, w, scale)
        if exact.sum() >= 400:
            ious.append(rle.mask_iou(rle.decode(ann["segmentation"]["counts"], h, w), exact))
    assert len(ious) == 5
    assert min(ious) >= 0.95, ious


def test_face_is_blurred_in_the_release_and_recorded_in_the_sidecar(released):
    out, face_id = released["out"], image_id("face.png")
    boxes = [b for p in sorted((out / "blur").glob("*.json")) for b in json.loads(p.read_text())["boxes"]]
    faces = [b for b in boxes if b["image_id"] == face_id and b["kind"] == "face"]
    assert len(faces) == 1 and set(faces[0]) == {"image_id", "box", "kind"}
    files = next(read_tar(p) for p in out.glob("sa_*.tar") if f"sa_{face_id}.jpg" in read_tar(p))
    jpeg = cv2.cvtColor(cv2.imdecode(np.frombuffer(files[f"sa_{face_id}.jpg"], np.uint8), 1), cv2.COLOR_BGR2RGB)
    photo = skimage_data.astronaut()
    box = faces[0]["box"]
    assert sharpness(jpeg, box) < 0.2 * sharpness(photo, box)
    # Masks are not changed by the blur: the face image is not downsampled, so its mask is the dataset's
    doc = json.loads(files[f"sa_{face_id}.json"])
    assert doc["annotations"][0]["segmentation"]["counts"] == rle.encode(draw(SHAPES[0], 512, 512, 1.0)[None])[0]


def test_rerun_changes_no_byte(released, tmp_path):
    before = release_files(released["out"])
    # A fresh output folder: the same bytes
    run_stage(release_cfg(released["dataset"], tmp_path / "again"))
    assert release_files(tmp_path / "again") == before
    # Resume: a tar lost with its done marker is written again, byte for byte
    (tmp_path / "again" / "sa_000001.tar").unlink()
    (tmp_path / "again" / "_done" / "000000" / "sa_000001.json").unlink()
    run_stage(release_cfg(released["dataset"], tmp_path / "again"))
    assert release_files(tmp_path / "again") == before


def test_resume_ignores_groups_that_do_not_change_a_release(released, tmp_path):
    out = copy_release(released["out"], tmp_path / "rel")
    before = release_files(out)
    run_stage(release_cfg(released["dataset"], out))
    (out / "sa_000000.tar").unlink()
    (out / "_done" / "000000" / "sa_000000.json").unlink()
    run_stage(release_cfg(released["dataset"], out, "amg.points_per_side=3", "model=vit_b"))
    assert release_files(out) == before
    with pytest.raises(UserError, match="different settings"):
        run_stage(release_cfg(released["dataset"], out, "release.jpeg_quality=80"))


def test_stages_choose_the_masks(released, tmp_path):
    summary = run_stage(release_cfg(released["dataset"], tmp_path / "both", "release.stages=[auto,assisted]"))
    assert summary["masks"] == 7


def test_a_missing_image_is_left_out_and_reported(tmp_path):
    dataset, images_dir = make_dataset(tmp_path)
    (images_dir / "face.png").unlink()
    (tmp_path / ".sa_000000.0123.tmp.tar").write_bytes(b"left by a killed worker")
    summary = run_stage(release_cfg(dataset, tmp_path))
    assert summary["images"] == 1 and summary["images_failed"] == 1
    assert summary["first_failure"]["file_name"] == "face.png" and "cannot read" in summary["first_failure"]["error"]
    assert json.loads((tmp_path / "manifest.json").read_text())["images"] == 1
    assert verify_release(tmp_path)["problems"] == []
    assert not list(tmp_path.glob(".sa_*"))


def test_a_dataset_given_twice_is_refused(tmp_path):
    dataset, _ = make_dataset(tmp_path)
    cfg = compose([*SMALL, "stage=release", f"release.data=[{dataset},{dataset}]", f"output.dir={tmp_path / 'r'}"])
    with pytest.raises(UserError, match="mask ids occur more than once"):
        run_stage(cfg)


# ---------------------------------------------------------------------------------------------
# Verifier
# ---------------------------------------------------------------------------------------------


def copy_release(src: Path, dst: Path) -> Path:
    dst.mkdir()
    for name, data in release_files(src).items():
        (dst / name).parent.mkdir(exist_ok=True)
        (dst / name).write_bytes(data)
    return dst


def test_verifier_passes_a_good_release(released):
    report = verify_release(released["out"])
    assert report["problems"] == []
    assert report["verdict"].endswith("ok (2 tars, 2 images, 6 masks checked)")
    assert run_stage(compose([*SMALL, "stage=release", f"release.verify={released['out']}"]))["masks"] == 6


def test_verifier_rejects_one_changed_byte(released, tmp_path):
    rel = copy_release(released["out"], tmp_path / "rel")
    tar = rel / "sa_000000.tar"
    data = bytearray(tar.read_bytes())
    data[len(data) // 3] ^= 0x01
    tar.write_bytes(bytes(data))
    with pytest.raises(UserError, match="sa_000000.tar: SHA-256 differs"):
        run_stage(compose([*SMALL, "stage=release", f"release.verify={rel}"]))


def test_verifier_rejects_a_mismatched_manifest(released, tmp_path):
    rel = copy_release(released["out"], tmp_path / "rel")
    manifest = json.loads((rel / "manifest.json").read_text())
    manifest["tars"][1]["masks"] += 1
    manifest["masks"] += 1
    (rel / "manifest.json").write_text(json.dumps(manifest))
    report = verify_release(rel)
    assert any("manifest.json says" in p for p in report["problems"]), report["problems"]
    (rel / "sa_000001.tar").unlink()
    assert any("missing" in p for p in verify_release(rel)["problems"])


def test_verifier_rejects_wrong_area_and_repeated_ids(released, tmp_path):
    rel = copy_release(released["out"], tmp_path / "rel")
    for tar in sorted(rel.glob("sa_*.tar")):
        files = read_tar(tar)
        for name in [n for n in files if n.endswith(".json")]:
            doc = json.loads(files[name])
            doc["annotations"][0]["area"] += 1
            doc["annotations"][-1]["id"] = 42
            files[name] = json.dumps(doc).encode()
        write_members(tar, list(files.items()))
    problems = verify_release(rel)["problems"]
    assert any("are not the mask's" in p for p in problems)
    assert any("42 is not a unique integer" in p for p in problems)


def write_members(path: Path, members: list[tuple[str, bytes]]) -> None:
    with tarfile.open(path, "w", format=tarfile.GNU_FORMAT) as tar:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))


def ustar_header(name: bytes, size: int) -> bytes:
    """A USTAR regular-file header with a correct checksum, whatever size it claims."""
    h = bytearray(512)
    h[: len(name)] = name
    h[100:108] = b"0000644\0"
    h[124:136] = f"{size:011o}\0".encode()
    h[156:157] = b"0"
    h[257:265] = b"ustar\x0000"
    h[148:156] = b" " * 8
    h[148:156] = f"{sum(h):06o}\0 ".encode()
    return bytes(h)


@pytest.mark.parametrize(
    "case",
    ["traversal", "huge", "symlink"],
)
def test_verifier_rejects_crafted_tars_without_extracting(released, tmp_path, case):
    rel = copy_release(released["out"], tmp_path / "rel")
    tar = rel / "sa_000000.tar"
    if case == "traversal":
        write_members(tar, [("../x", b"escaped"), *read_tar(released["out"] / "sa_000000.tar").items()])
    elif case == "huge":  # claims ~64 GiB in a file of a few blocks
        tar.write_bytes(ustar_header(b"sa_1.json", 1 << 36) + bytes(2048))
    else:
        with tarfile.open(tar, "w") as t:
            link = tarfile.TarInfo("sa_1.jpg")
            link.type, link.linkname = tarfile.SYMTYPE, "/etc/passwd"
            t.addfile(link)
    before = sorted(p.name for p in tmp_path.rglob("*"))
    report = verify_release(rel)
    assert report["problems"] and "INVALID" in report["verdict"]
    assert any(case_word in " ".join(report["problems"]) for case_word in PROBLEM_WORDS[case]), report["problems"]
    assert sorted(p.name for p in tmp_path.rglob("*")) == before  # nothing extracted
    assert not (rel.parent / "x").exists()


PROBLEM_WORDS = {
    "traversal": ["unexpected member b'../x'", "not a regular file"],
    "huge": ["past the end of the file"],
    "symlink": ["not a regular file"],
}


def test_counts_parser_agrees_with_pycocotools():
    rng = np.random.default_rng(0)
    for _ in range(20):
        h, w = rng.integers(1, 60, size=2)
        mask = rng.random((h, w)) < rng.random()
        counts = rle.encode(mask[None])[0]
        runs = parse_counts(counts)
        assert runs.sum() == h * w and runs[1::2].sum() == mask.sum() == rle.area([counts], h, w)[0]
    assert parse_counts("") is None and parse_counts("\x7f") is None and parse_counts("0" * 3 + "p") is None


# ---------------------------------------------------------------------------------------------
# Config
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "override, key",
    [
        ("release.jpeg_quality=0", "release.jpeg_quality"),
        ("release.shortest_side=-5", "release.shortest_side"),
        ("release.blur.scale_factor=1.0", "release.blur.scale_factor"),
        ("release.data=[]", "release.data"),
        ("release.data=[/no/such/dataset]", "release.data"),
        ("release.blur.cascades.face=no_such.xml", "release.blur.cascades.face"),
        ("release.blur.strength=nan", "release.blur.strength"),
        ("release.blur.scale_factor=inf", "release.blur.scale_factor"),
        ("release.blur.strength=inf", "release.blur.strength"),  # accepted before: no finiteness check
    ],
)
def test_bad_settings_are_rejected(tmp_path, override, key):
    cfg = compose([*SMALL, "stage=release", f"release.data=[{tmp_path}]", f"output.dir={tmp_path / 'out'}", override])
    with pytest.raises(ConfigError, match=key):
        run_stage(cfg)

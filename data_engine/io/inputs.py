"""Find the input files, give them stable ids and split them into shards."""

from __future__ import annotations

import hashlib
from pathlib import Path

from data_engine.errors import UserError

SAMPLES = Path(__file__).parent.parent / "samples"
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp", ".gif")


class InputError(UserError, ValueError):
    """The input path or manifest cannot be used; the message says what to do."""


def list_inputs(path: str | Path | None, extensions=None) -> tuple[Path, list[str], list[str]]:
    """(root, sorted relative file names, ignored names) for a folder or a manifest file; extensions
    None means IMAGE_EXTENSIONS."""
    extensions = extensions or IMAGE_EXTENSIONS
    root = Path(path).expanduser().resolve() if path else SAMPLES
    if root.is_dir():
        return root, *scan_folder(root, extensions)
    if root.is_file():
        return root.parent, read_manifest(root), []
    raise InputError(f"input.path={path} does not exist: give a folder of images or a manifest file")


def scan_folder(root: Path, extensions) -> tuple[list[str], list[str]]:
    """Images under `root`, recursively; hidden files skipped; other files reported as ignored."""
    wanted = tuple(e.lower() for e in extensions)
    names, ignored = [], []
    for p in sorted(root.rglob("*")):
        rel = p.relative_to(root).as_posix()
        if any(part.startswith(".") for part in p.relative_to(root).parts) or p.is_dir():
            continue
        (names if p.suffix.lower() in wanted else ignored).append(rel)
    return names, ignored


def read_manifest(manifest: Path) -> list[str]:
    """One path per line (relative to the manifest's folder, or absolute); '#' starts a comment."""
    lines = [ln.strip() for ln in manifest.read_text().splitlines()]
    names = [ln for ln in lines if ln and not ln.startswith("#")]
    if not names:
        raise InputError(f"manifest {manifest} lists no files")
    return names


def image_id(name: str) -> int:
    """Stable 63-bit id from the file's name relative to the input root."""
    return int.from_bytes(hashlib.sha1(name.encode()).digest()[:8], "big") & ((1 << 63) - 1)


def make_shards(names: list[str], shard_size: int) -> list[dict]:
    """Deterministic shards: shard-00000, shard-00001, ... of `shard_size` names each."""
    return [
        {"shard_id": f"shard-{i // shard_size:05d}", "files": names[i : i + shard_size]}
        for i in range(0, len(names), shard_size)
    ]

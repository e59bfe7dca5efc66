"""Find the input files, give them stable ids, split them into shards, and open only regular files."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import stat
from pathlib import Path

from data_engine.errors import UserError

log = logging.getLogger(__name__)

SAMPLES = Path(__file__).parent.parent / "samples"
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp", ".gif")
NOT_AN_IMAGE = "not an image by extension"
FOLLOW = "input.follow_symlinks=true follows it"
LEAVES_ROOT = f"a symlink to a path outside the input folder ({FOLLOW})"
FILE_KINDS = {
    stat.S_IFIFO: "a FIFO",
    stat.S_IFCHR: "a character device",
    stat.S_IFBLK: "a block device",
    stat.S_IFSOCK: "a socket",
    stat.S_IFDIR: "a folder",
}


class InputError(UserError, ValueError):
    """The input path or manifest cannot be used; the message says what to do."""


class JsonFileError(InputError):
    """A JSON file that cannot be read; `reason` says why (e.g. 'JSONDecodeError: ...')."""

    def __init__(self, message: str, reason: str):
        super().__init__(message)
        self.reason = reason


def list_inputs(
    path: str | Path | None, extensions=None, follow_symlinks: bool = False
) -> tuple[Path, list[str], dict[str, str]]:
    """(root, sorted relative file names, {ignored name: reason}) for a folder or a manifest file;
    extensions None means IMAGE_EXTENSIONS."""
    extensions = extensions or IMAGE_EXTENSIONS
    root = Path(path).expanduser().resolve() if path else SAMPLES
    if root.is_dir():
        return root, *scan_folder(root, extensions, follow_symlinks)
    if root.is_file():
        return root.parent, read_manifest(root), {}
    raise InputError(f"input.path={path} does not exist: give a folder of images or a manifest file")


def scan_folder(root: Path, extensions, follow_symlinks: bool = False) -> tuple[list[str], dict[str, str]]:
    """Images under `root`, recursively, hidden entries skipped; every other entry found is in the
    ignored dict with its reason. Symlinks that leave `root` are followed only with `follow_symlinks`."""
    wanted = tuple(e.lower() for e in extensions)
    names, ignored, seen = [], {}, set()
    for folder, dirs, files in os.walk(root, followlinks=follow_symlinks):
        # Each real folder once (a link cycle ends here), hidden entries skipped
        if os.path.realpath(folder) in seen:
            dirs[:] = []
            continue
        seen.add(os.path.realpath(folder))
        here = Path(folder)
        dirs[:] = [d for d in dirs if not d.startswith(".") and keep_link(here / d, root, follow_symlinks, ignored)]
        for name in files:
            path = here / name
            if name.startswith("."):
                continue
            if path.suffix.lower() not in wanted:
                ignored[rel(path, root)] = NOT_AN_IMAGE
            elif keep_link(path, root, follow_symlinks, ignored):
                names.append(rel(path, root))
    if any(reason == LEAVES_ROOT for reason in ignored.values()):
        log.warning("symlinks leaving %s were skipped (input.follow_symlinks=false): see ignored_files", root)
    return sorted(names, key=lambda n: n.split("/")), dict(sorted(ignored.items()))


def keep_link(path: Path, root: Path, follow_symlinks: bool, ignored: dict) -> bool:
    """False (and the link recorded in `ignored`) for a symlink leaving the root, unless following links."""
    if follow_symlinks or not path.is_symlink():
        return True
    if leaves_root(path, root):
        ignored[rel(path, root)] = LEAVES_ROOT
        return False
    return not os.path.isdir(path)  # a link to a folder inside: its files are listed under their own path


def leaves_root(path: Path, root: Path) -> bool:
    """True when `path`, its symlinks (its own or its folders') followed, lies outside `root`: the one rule
    for links out of an input folder, which every stage reading images follows only with input.follow_symlinks."""
    target, real_root = os.path.realpath(path), os.path.realpath(root)
    return not (target == real_root or target.startswith(real_root.rstrip(os.sep) + os.sep))


def rel(path: Path, root) -> str:
    return Path(os.path.relpath(path, root)).as_posix()


def read_json(path: str | Path, what: str = "file"):
    """The parsed JSON of a file a user gives (an export, a run record), or an InputError naming it: the one
    reader of such files, so a file that is unreadable, not UTF-8, not JSON or nested too deeply is one line."""
    try:
        return json.loads(Path(path).read_bytes())
    except RecursionError:  # '[' * 200000: the parser's recursion limit, not a crash
        reason = "RecursionError: lists or objects nested too deeply"
    except (OSError, ValueError) as err:  # ValueError covers JSONDecodeError and UnicodeDecodeError
        reason = f"{type(err).__name__}: {err}"
    message = f"{what} {path} is not a readable JSON file ({reason}); give a JSON file written by its tool"
    raise JsonFileError(message, reason)


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


def make_shards(names: list[str], shard_size: int, root: Path | None = None) -> list[dict]:
    """Deterministic shards: shard-00000, shard-00001, ... of `shard_size` names each. With `root`, each
    shard also carries `inputs`: a digest of its files' names, sizes and modification times, which a
    resume compares to redo a shard whose files changed."""
    shards = [
        {"shard_id": f"shard-{i // shard_size:05d}", "files": names[i : i + shard_size]}
        for i in range(0, len(names), shard_size)
    ]
    for shard in shards if root is not None else []:
        shard["inputs"] = inputs_digest(Path(root), shard["files"])
    return shards


def inputs_digest(root: Path, names: list[str]) -> str:
    """SHA-256 of (name, size, mtime) per file; a file that cannot be stat'ed counts as (name, None, None)."""
    listing = []
    for name in names:
        try:
            st = os.stat(resolve(root, name))
            listing.append([name, st.st_size, st.st_mtime_ns])
        except OSError:
            listing.append([name, None, None])
    return hashlib.sha256(json.dumps(listing).encode()).hexdigest()


def resolve(root: Path, name: str) -> Path:
    path = Path(name)
    return path if path.is_absolute() else root / path


def check_regular(path: Path) -> None:
    """Open only regular files: a FIFO, device or socket named like an image would block or never end."""
    try:
        mode = os.stat(path).st_mode
    except OSError as err:
        raise InputError(f"cannot read file: {err.strerror}") from None
    if not stat.S_ISREG(mode):
        kind = FILE_KINDS.get(stat.S_IFMT(mode), "not a regular file")
        raise InputError(f"{path.name} is {kind}, not a regular file: only regular files are read")

"""Find the input files, give them stable ids, split them into shards, and open only regular files."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import stat
from pathlib import Path
from typing import NamedTuple

import numpy as np

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


class Listing(NamedTuple):
    root: Path
    names: list[str]  # relative to root (or absolute, from a manifest)
    ignored: dict[str, str]  # {name: why it is not an input}
    stamps: Stamps | list | None = None  # [(size, mtime)] aligned with names, when a manifest table gives them


def list_inputs(path: str | Path | None, extensions=None, follow_symlinks: bool = False) -> Listing:
    """The input files of a folder or a manifest file; extensions None means IMAGE_EXTENSIONS."""
    extensions = extensions or IMAGE_EXTENSIONS
    root = Path(path).expanduser().resolve() if path else SAMPLES
    if root.is_dir():
        return Listing(root, *scan_folder(root, extensions, follow_symlinks))
    if root.is_file():
        return Listing(root.parent, *read_manifest(root))
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


def read_manifest(manifest: Path) -> tuple[list[str], dict, list | None]:
    """(paths, {} ignored, [(size, mtime)] aligned with the paths or None). A .parquet or .csv manifest is
    a table with a `path` column and optionally `size` and `mtime` (then a rerun trusts them and stats no
    input file); any other file lists one path per line, '#' starting a comment. Paths are relative to the
    manifest's folder, or absolute."""
    if manifest.suffix.lower() in (".parquet", ".csv"):
        names, stamps = read_manifest_table(manifest)
    else:
        lines = [ln.strip() for ln in manifest.read_text().splitlines()]
        names, stamps = [ln for ln in lines if ln and not ln.startswith("#")], None
    if not names:
        raise InputError(f"manifest {manifest} lists no files")
    return names, {}, stamps


def read_manifest_table(manifest: Path) -> tuple[list[str], Stamps | list | None]:
    """A Parquet manifest is read a batch of rows at a time, so that no more than one batch of it is held
    in Arrow memory beside the paths and stamps kept."""
    import pyarrow.csv as pa_csv
    import pyarrow.parquet as pq

    try:
        if manifest.suffix.lower() == ".parquet":
            table = pq.ParquetFile(manifest)
            columns, batches = table.schema_arrow.names, table.iter_batches(MANIFEST_BATCH)
        else:
            table = pa_csv.read_csv(manifest)
            columns, batches = table.column_names, table.to_batches()
        if "path" not in columns:
            raise InputError(f"manifest {manifest} has no `path` column (it has {columns})")
        stamped = {"size", "mtime"} <= set(columns)
        names, sizes, mtimes = [], [], []
        for batch in batches:
            names.extend(str(p) for p in batch.column("path").to_pylist())
            if stamped:
                sizes.append(stamp_values(batch.column("size")))
                mtimes.append(stamp_values(batch.column("mtime")))
    except InputError:
        raise
    except Exception as err:  # pyarrow's errors name the problem
        raise InputError(f"manifest {manifest} cannot be read as a table ({err}): give a path column") from None
    if not stamped:
        return names, None
    if all(isinstance(part, np.ndarray) for part in sizes + mtimes):
        return names, Stamps(np.concatenate(sizes or [[]]), np.concatenate(mtimes or [[]]))
    values = [
        [v for part in parts for v in (part.tolist() if isinstance(part, np.ndarray) else part)]
        for parts in (sizes, mtimes)
    ]
    return names, list(zip(*values))


MANIFEST_BATCH = 1 << 16


def stamp_values(column):
    """A manifest's size or mtime values: an array where they are numbers without nulls, else a list."""
    import pyarrow as pa

    numeric = pa.types.is_integer(column.type) or pa.types.is_floating(column.type)
    return column.to_numpy() if numeric and column.null_count == 0 else column.to_pylist()


class Stamps:
    """[(size, mtime)] of a manifest's files held as two arrays (16 bytes a file, not a tuple's ~150);
    a slice gives the list of (size, mtime) tuples, the same values a list would hold."""

    def __init__(self, sizes: np.ndarray, mtimes: np.ndarray):
        self.sizes, self.mtimes = sizes, mtimes

    def __len__(self) -> int:
        return len(self.sizes)

    def __getitem__(self, index: slice) -> list[tuple]:
        return list(zip(self.sizes[index].tolist(), self.mtimes[index].tolist()))


def image_id(name: str) -> int:
    """Stable 63-bit id from the file's name relative to the input root."""
    return int.from_bytes(hashlib.sha1(name.encode()).digest()[:8], "big") & ((1 << 63) - 1)


def make_shards(names: list[str], shard_size: int, root: Path | None = None, stamps: list | None = None) -> list:
    """Deterministic shards of `shard_size` names each (ids: io.dataset.shard_name). With `root`, each
    shard also carries `inputs`: a digest of its files' names, sizes and modification times (`stamps` when
    a manifest gives them, else from the file system), which a resume compares to redo a shard whose files
    changed."""
    from data_engine.io.dataset import shard_name  # the dataset layout reads user JSON through this module

    shards = []
    for i in range(0, len(names), shard_size):
        shard = {"shard_id": shard_name(i // shard_size), "files": names[i : i + shard_size]}
        if root is not None:
            stamp = stamps[i : i + shard_size] if stamps else [file_stamp(root, n) for n in shard["files"]]
            shard["inputs"] = inputs_digest(shard["files"], stamp)
        shards.append(shard)
    return shards


def inputs_digest(names: list[str], stamps: list) -> str:
    """SHA-256 of (name, size, mtime) per file."""
    return hashlib.sha256(json.dumps([[n, *s] for n, s in zip(names, stamps)]).encode()).hexdigest()


def file_stamp(root: Path, name: str) -> tuple:
    """(size, modification time) of an input file; (None, None) if it cannot be stat'ed."""
    try:
        st = os.stat(resolve(root, name))
    except OSError:
        return None, None
    return st.st_size, st.st_mtime_ns


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

"""The package layout is the architecture: no package imports one above it, and Ray stays in runtime/."""

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1] / "data_engine"
# Lowest first; a package may import only packages of a lower layer (and itself).
LAYERS = [
    ["errors"],
    ["schema"],
    ["io"],
    ["synth", "model", "runtime"],
    ["verifier"],
    ["amg", "importers", "exports"],
    ["train", "audit", "release"],
    ["detector"],
    ["semi"],
    ["stages"],
    ["config"],
    ["engine"],
    ["cli"],
    ["__init__"],  # the Python API (data_engine.run, Dataset, MaskGenerator) beside the CLI it shares code with
    ["__main__"],
]
LEVEL = {name: i for i, names in enumerate(LAYERS) for name in names}
# The engine is a stage too: its thin stage module hands the run to the engine package.
ALLOWED_UPWARD = {("stages/engine.py", "engine")}


def imports(path: Path):
    """(imported data_engine package, line) for every import in the file, at any depth."""
    for node in ast.walk(ast.parse(path.read_text())):
        names = []
        if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "data_engine":
            names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
        elif isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        for name in names:
            parts = name.split(".")
            if parts[0] == "data_engine" and len(parts) > 1 and parts[1] in LEVEL:
                yield parts[1], node.lineno


def package_of(path: Path) -> str:
    rel = path.relative_to(ROOT).parts
    return rel[0] if len(rel) > 1 else rel[0].removesuffix(".py")


def test_every_package_has_a_layer():
    packages = {package_of(p) for p in ROOT.rglob("*.py") if "conf" not in p.relative_to(ROOT).parts}
    assert packages <= set(LEVEL), f"place these in LAYERS: {sorted(packages - set(LEVEL))}"


def test_no_module_imports_one_above_it():
    upward = set()
    for path in sorted(ROOT.rglob("*.py")):
        src = package_of(path)
        if src not in LEVEL:
            continue
        for dst, line in imports(path):
            rel = path.relative_to(ROOT).as_posix()
            if dst != src and LEVEL[dst] >= LEVEL[src] and (rel, dst) not in ALLOWED_UPWARD:
                upward.add(f"{rel}:{line} imports {dst}")
    assert not upward, "imports against the layering:\n" + "\n".join(sorted(upward))


def test_ray_is_imported_only_in_runtime():
    outside = [
        f"{p.relative_to(ROOT)}:{node.lineno}"
        for p in ROOT.rglob("*.py")
        if package_of(p) != "runtime"
        for node in ast.walk(ast.parse(p.read_text()))
        if (isinstance(node, ast.Import) and any(a.name.split(".")[0] == "ray" for a in node.names))
        or (isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] == "ray")
    ]
    assert not outside, outside


def test_datasets_are_read_only_through_the_dataset_handle():
    """One place knows a dataset folder's layout: outside io/dataset.py the package reads masks/ and images/
    through Dataset (open, masks, images, by_image), never with the table readers beneath it."""
    private = {"read_masks", "read_images", "read_part", "scan_part", "find_image_root"}
    found = []
    for path in sorted(ROOT.rglob("*.py")):
        if path == ROOT / "io" / "dataset.py":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module == "data_engine.io.dataset":
                found += [f"{path.relative_to(ROOT)}:{node.lineno} {a.name}" for a in node.names if a.name in private]
            elif isinstance(node, ast.Attribute) and node.attr in private and isinstance(node.value, ast.Name):
                if node.value.id == "dataset":  # from data_engine.io import dataset
                    found.append(f"{path.relative_to(ROOT)}:{node.lineno} dataset.{node.attr}")
    assert not found, f"read these through data_engine.io.dataset.Dataset: {found}"

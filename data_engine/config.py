"""The composed config: building it (Hydra groups under conf/), and checking it before any work starts.

Every message names the key and what to do. Each stage module may define `check(section)` for its own
section (e.g. `train`); `validate` runs it with the shared checks below.
"""

from __future__ import annotations

import ast
import difflib
import importlib
from functools import cache
from pathlib import Path

from data_engine.errors import check_bool, check_int, check_number, check_path, is_number, require

CONF_DIR = Path(__file__).parent / "conf"
GENERATOR_SOURCE = Path(__file__).parent / "amg" / "generator.py"
PILLOW_LIMIT = 2 * 89_478_485  # Pillow refuses images above twice Image.MAX_IMAGE_PIXELS as decompression bombs
# Sections whose keys are checked elsewhere (amg against the generator's signature) or not at all.
FREE_SECTIONS = ("amg", "hydra")


def register_configs() -> None:
    """amg/sa1b is the generator's own defaults (the SA-1B recipe): one place for them, not a copy in yaml."""
    from hydra.core.config_store import ConfigStore

    ConfigStore.instance().store(group="amg", name="sa1b", node=generator_defaults())


def generator_defaults() -> dict:
    return {k: list(v) if isinstance(v, tuple) else v for k, (v, _) in generator_settings().items()}


@cache
def generator_settings() -> dict[str, tuple[object, str]]:
    """MaskGenerator's settings as {name: (default, annotation)}, read from its source, not imported (that
    would import torch, about 3 s and 800 MB, for commands such as --cfg job that never run a model)."""
    tree = ast.parse(GENERATOR_SOURCE.read_text())
    cls = next(n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == "MaskGenerator")
    init = next(n for n in cls.body if isinstance(n, ast.FunctionDef) and n.name == "__init__").args
    with_default = init.args[len(init.args) - len(init.defaults) :]
    return {a.arg: (constant(d), ast.unparse(a.annotation)) for a, d in zip(with_default, init.defaults)}


def constant(node: ast.expr):
    """A default written as a constant expression: 32, 512 / 1500, 2**27, (0.5, 0.55), None."""
    return eval(compile(ast.Expression(node), "<default>", "eval"), {"__builtins__": {}})  # noqa: S307


def compose(overrides: list[str]) -> dict:
    """The project's Hydra config with `overrides` (as on the command line), as a plain dict: what the
    CLI hands to the stages, for scripts and tests that run outside the CLI."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from omegaconf import OmegaConf

    register_configs()
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = hydra_compose(config_name="config", overrides=overrides)
    return OmegaConf.to_container(cfg, resolve=True)


def validate(cfg: dict) -> None:
    """Every key known and every value usable, for the shared sections and the stage's own (the model
    section only for a stage that loads a model: checking it imports torch)."""
    from data_engine.stages import NO_MODEL

    stage = stage_module(cfg["stage"]["name"])
    check_known_keys(cfg)
    if cfg["stage"]["name"] not in NO_MODEL:
        check_model(cfg["model"])
    check_runtime(cfg["runtime"])
    check_amg(cfg["amg"])
    check_input(cfg["input"])
    check_output(cfg["output"])
    section = cfg.get(cfg["stage"]["name"])
    if hasattr(stage, "check") and isinstance(section, dict):
        stage.check(section)


def stage_module(name: str):
    from data_engine.stages import STAGES

    require(name in STAGES, "stage", f"unknown stage {name!r}; choose from {sorted(STAGES)}")
    return importlib.import_module(STAGES[name])


def check_known_keys(cfg: dict) -> None:
    """Keys that no config file defines (a typo, or `+input.foo`) are refused, not ignored."""
    known = known_keys()
    for top, value in cfg.items():
        require(top in known, top, unknown_hint(top, known))
        if top not in FREE_SECTIONS:
            check_subkeys(value, known[top], top)


def check_subkeys(value, reference, path: str) -> None:
    if not isinstance(value, dict) or not isinstance(reference, dict) or not reference:
        return  # a leaf, a list, or a free-form mapping
    for key, sub in value.items():
        require(key in reference, f"{path}.{key}", unknown_hint(f"{path}.{key}", reference))
        check_subkeys(sub, reference[key], f"{path}.{key}")


def unknown_hint(path: str, known) -> str:
    """What to say of the unknown dotted key `path`: a close known key where there is one, else them all."""
    parent, _, key = path.rpartition(".")
    close = difflib.get_close_matches(key, list(known), n=1)
    if close:
        return f"unknown key; did you mean {parent + '.' if parent else ''}{close[0]}?"
    return f"unknown key; known{' under ' + parent if parent else ''}: {sorted(known)}"


def unknown_key(dotted: str) -> str | None:
    """Why a key set on the command line (`amg.pred_iou_thres`) is in no config file nor the generator's
    settings, as one line; None when it is known somewhere (hydra.* and free-form mappings are not checked)."""
    node, parts = {**known_keys(), "amg": generator_defaults()}, dotted.split(".")
    if parts[0] == "hydra":
        return None
    for i, part in enumerate(parts):
        if not isinstance(node, dict) or not node:
            return None
        if part not in node:
            path = ".".join(parts[: i + 1])
            return f"{path}: {unknown_hint(path, node)}"
        node = node[part]
    return None


@cache
def known_keys() -> dict:
    """Every key some config file defines: config.yaml, every stage file, every option of every group."""
    from omegaconf import OmegaConf

    tree: dict = {}
    for path in sorted(CONF_DIR.rglob("*.yaml")):
        doc = OmegaConf.to_container(OmegaConf.load(path)) or {}
        doc = {k: v for k, v in doc.items() if k not in ("defaults", "hydra")}
        rel = path.relative_to(CONF_DIR)
        is_global = len(rel.parts) == 1 or "@package _global_" in path.read_text().split("\n", 1)[0]
        merge_keys(tree, doc if is_global else {rel.parts[0]: doc})
    return tree


def merge_keys(into: dict, doc: dict) -> None:
    for key, value in doc.items():
        if isinstance(value, dict) and isinstance(into.get(key), dict):
            merge_keys(into[key], value)
        elif key not in into or not isinstance(into[key], dict):
            into[key] = value


def check_model(m: dict) -> None:
    from data_engine.model.build import ARCHS, OFFICIAL

    require(m["variant"] in ARCHS, "model.variant", f"unknown variant {m['variant']!r}; choose from {sorted(ARCHS)}")
    check_path(m, "model.checkpoint", nullable=True)
    if not m["checkpoint"] and m["variant"] in OFFICIAL:
        require(
            bool(m["download"]),
            "model.checkpoint",
            f"model={m['variant']} needs model.checkpoint=/path/to/{OFFICIAL[m['variant']][0]} "
            "(or model.download=true on a machine with internet access)",
        )
    require(
        m["device"] in (None, "cpu", "cuda") or str(m["device"]).startswith("cuda:"),
        "model.device",
        f"{m['device']!r} is not cpu, cuda or cuda:N",
    )
    check_bool(m, "model.download")


def check_runtime(r: dict) -> None:
    require(r["name"] in ("local", "ray_cluster", "serial"), "runtime", f"unknown runtime {r['name']!r}")
    for key in ("cpus_per_worker", "gpus_per_worker"):
        require(is_number(r[key]) and r[key] > 0, f"runtime.{key}", f"must be a positive number, got {r[key]!r}")
    check_int(r, "runtime.max_retries", 0)
    check_int(r, "runtime.num_workers", 1, nullable=True)
    check_number(r, "runtime.shard_timeout_s", 1e-3, None, nullable=True)
    check_number(r, "runtime.placement_timeout_s", 0)
    check_number(r, "runtime.connect_timeout_s", 1e-3)
    check_bool(r, "runtime.progress")


def check_input(i: dict) -> None:
    check_int(i, "input.shard_size", 1)
    check_int(i, "input.max_pixels", 1)
    require(i["max_pixels"] <= PILLOW_LIMIT, "input.max_pixels", f"at most {PILLOW_LIMIT} (Pillow's own limit)")
    check_number(i, "input.image_timeout_s", 0, nullable=True)
    require(i["image_timeout_s"] != 0, "input.image_timeout_s", "must be above 0 seconds, or null for no limit")
    check_bool(i, "input.follow_symlinks")
    check_path(i, "input.path", nullable=True, hint=": give a folder of images or a manifest file")
    ext = i["extensions"]
    require(
        ext is None or (isinstance(ext, list) and ext and all(isinstance(e, str) and e.startswith(".") for e in ext)),
        "input.extensions",
        f"must be null or a list of extensions with their dot, e.g. [.png, .jpg], got {ext!r}",
    )


def check_output(o: dict) -> None:
    require(not Path(o["dir"]).is_file(), "output.dir", f"{o['dir']} is a file: give a folder")
    check_bool(o, "output.overwrite")
    check_int(o, "output.overlays", 0)


def check_amg(a: dict) -> None:
    params = generator_settings()
    for key, value in a.items():
        require(key in params, f"amg.{key}", unknown_hint(f"amg.{key}", params))
        default, nullable = params[key][0], "None" in params[key][1]
        if value is None:
            require(nullable, f"amg.{key}", "must not be null")
        elif isinstance(default, bool):
            check_bool(a, f"amg.{key}")
        elif isinstance(default, int):
            check_int(a, f"amg.{key}", 0)
        elif isinstance(default, float) or default is None:
            check_number(a, f"amg.{key}", 0)
    for key in (
        "pred_iou_thresh",
        "stability_score_thresh",
        "box_nms_thresh",
        "crop_nms_thresh",
        "candidate_iou_floor",
        "candidate_stability_floor",
    ):
        check_number(a, f"amg.{key}", 0, 1)
    check_number(a, "amg.crop_overlap_ratio", 0, 0.99)
    check_number(a, "amg.max_mask_area_frac", 0, 1, nullable=True)
    check_number(a, "amg.mask_nms_thresh", 0, 1, nullable=True)
    for key in (
        "points_per_side",
        "points_per_batch",
        "crops_per_batch",
        "crop_n_points_downscale_factor",
        "images_per_batch",
    ):
        check_int(a, f"amg.{key}", 1)
    check_int(a, "amg.decoder_batch", 1, nullable=True)
    levels = a["stability_levels"]
    require(
        isinstance(levels, (list, tuple))
        and len(levels) == 2
        and all(is_number(p) for p in levels)
        and 0 < levels[0] < levels[1] < 1,
        "amg.stability_levels",
        f"must be two probabilities low < high in (0, 1), got {levels!r}",
    )

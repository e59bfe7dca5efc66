"""Check a composed config before any work starts; every message names the key and what to do."""

from __future__ import annotations

import inspect
from pathlib import Path

from data_engine.errors import ConfigError

CONF_DIR = Path(__file__).parent / "conf"


def compose(overrides: list[str]) -> dict:
    """The project's Hydra config with `overrides` (as on the command line), as a plain dict: what the
    CLI hands to the stages, for scripts and tests that run outside the CLI."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from omegaconf import OmegaConf

    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = hydra_compose(config_name="config", overrides=overrides)
    return OmegaConf.to_container(cfg, resolve=True)


def validate(cfg: dict) -> None:
    from data_engine.stages import STAGES

    require(
        cfg["stage"]["name"] in STAGES, "stage", f"unknown stage {cfg['stage']['name']!r}; choose from {sorted(STAGES)}"
    )
    check_model(cfg["model"])
    check_runtime(cfg["runtime"])
    check_amg(cfg["amg"])
    check_input(cfg["input"])


def require(ok: bool, key: str, message: str) -> None:
    if not ok:
        raise ConfigError(f"{key}: {message}")


def check_model(m: dict) -> None:
    from data_engine.model.build import ARCHS, OFFICIAL

    require(m["variant"] in ARCHS, "model.variant", f"unknown variant {m['variant']!r}; choose from {sorted(ARCHS)}")
    if m["checkpoint"]:
        path = Path(m["checkpoint"]).expanduser()
        require(path.is_file(), "model.checkpoint", f"{path} does not exist")
    elif m["variant"] in OFFICIAL:
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


def check_runtime(r: dict) -> None:
    require(r["name"] in ("local", "ray_cluster", "serial"), "runtime", f"unknown runtime {r['name']!r}")
    for key in ("cpus_per_worker", "gpus_per_worker"):
        require(is_number(r[key]) and r[key] > 0, f"runtime.{key}", f"must be a positive number, got {r[key]!r}")
    require(is_int(r["max_retries"]) and r["max_retries"] >= 0, "runtime.max_retries", "must be an integer >= 0")
    require(
        r["num_workers"] is None or (is_int(r["num_workers"]) and r["num_workers"] > 0),
        "runtime.num_workers",
        "must be null or a positive integer",
    )


def check_input(i: dict) -> None:
    require(is_int(i["shard_size"]) and i["shard_size"] > 0, "input.shard_size", "must be a positive integer")
    require(is_int(i["max_pixels"]) and i["max_pixels"] > 0, "input.max_pixels", "must be a positive integer")
    if i["path"] is not None:
        require(
            Path(i["path"]).expanduser().exists(),
            "input.path",
            f"{i['path']} does not exist: give a folder of images or a manifest file",
        )


def check_amg(a: dict) -> None:
    from data_engine.amg.generator import MaskGenerator

    params = inspect.signature(MaskGenerator).parameters
    for key, value in a.items():
        require(key in params, f"amg.{key}", f"not a generator setting; known: {sorted(params)[1:]}")
        default, nullable = params[key].default, "None" in str(params[key].annotation)
        if value is None:
            require(nullable, f"amg.{key}", "must not be null")
        elif isinstance(default, bool):
            require(isinstance(value, bool), f"amg.{key}", f"must be true or false, got {value!r}")
        elif isinstance(default, int):
            require(is_int(value) and value >= 0, f"amg.{key}", f"must be an integer >= 0, got {value!r}")
        elif isinstance(default, float) or default is None:
            require(is_number(value) and value >= 0, f"amg.{key}", f"must be a number >= 0, got {value!r}")
    for key in ("pred_iou_thresh", "stability_score_thresh", "box_nms_thresh", "crop_nms_thresh"):
        require(0 <= a[key] <= 1, f"amg.{key}", f"must lie in [0, 1], got {a[key]}")
    require(
        a["points_per_side"] >= 1 and a["points_per_batch"] >= 1 and a["crops_per_batch"] >= 1,
        "amg.points_per_side",
        "points_per_side, points_per_batch and crops_per_batch must be >= 1",
    )
    levels = a["stability_levels"]
    require(
        isinstance(levels, (list, tuple))
        and len(levels) == 2
        and all(is_number(p) for p in levels)
        and 0 < levels[0] < levels[1] < 1,
        "amg.stability_levels",
        f"must be two probabilities low < high in (0, 1), got {levels!r}",
    )


def is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)

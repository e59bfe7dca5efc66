"""The composed config: its typed sections, building it (Hydra groups under conf/), and checking it once.

Every section of the config is a frozen dataclass (data_engine.schema): its fields are the section's
keys with their defaults and ranges. `register_configs` stores each section's defaults in Hydra's
ConfigStore (group `section`), and the yaml under conf/ starts from them, holding only what differs
(conf/stage/train.yaml: `defaults: [/section/train@train]`; conf/model/vit_h.yaml: `variant: vit_h`).
The `amg` section is built from MaskGenerator's signature: its defaults are the generator's own.

`validate(cfg)` parses every section once, before any work: an unknown key or a bad value is a
ConfigError whose one line starts with the key. It returns the stage's own section as its dataclass,
which `stages.run_stage(cfg, settings)` hands to the stage's `run(cfg, settings)`. Validating reads
the file system (paths that must exist) and writes or builds nothing.

Adding a stage's typed section (stage NAME, keys NAME.*), or converting one checked by hand:

1. Declare a frozen dataclass in the stage module (or, when a library package reads the section too,
   in a torch-free module of that package, as train/settings.py does), one field per key with its
   default, its range (`setting(1000, ge=1)`, `choices=`, `exists="dir"`, `required="what to give"`)
   and a comment saying what it does. Rules across fields go in its `check(self)` method, raising
   with `require(ok, "NAME.key", "what to do")`. The module must import without torch (heavy imports
   go inside the functions that need them): composing any config imports every section.
2. Add it to `stages.sections()`. conf/stage/NAME.yaml keeps its header comment and holds
   `defaults: [/section/NAME@NAME, _self_]` and `stage: {name: NAME}`; no key is repeated in yaml.
3. Write `run(cfg: dict, settings: NAME) -> dict`, reading `settings.key`; the stage checks nothing
   again (validate did, once) and has no `check()` of its own. Paths the run records are made
   absolute with `schema.absolute(settings, names)`.
4. tests/test_config_sections.py runs every stage's config: the section must refuse an unknown key,
   and a NaN in its first float key, in one line naming the key. A stage that cannot validate without
   inputs gets them in that test's `stage_inputs`.
"""

from __future__ import annotations

import ast
from contextlib import contextmanager
from dataclasses import dataclass, make_dataclass
from functools import cache
from pathlib import Path

from data_engine.errors import ConfigError, require
from data_engine.schema import defaults, keys, parse, setting, unknown_hint

CONF_DIR = Path(__file__).parent / "conf"
GENERATOR_SOURCE = Path(__file__).parent / "amg" / "generator.py"
PILLOW_LIMIT = 2 * 89_478_485  # Pillow refuses images above twice Image.MAX_IMAGE_PIXELS as decompression bombs
# Top-level keys that are not sections (config.yaml's own; hydra's when composed by Hydra's app).
TOP_LEVEL = ("stage", "seed", "log_level", "hydra")


# ----------------------------------------------------------------------------------------------
# The shared sections (every stage's config has them)
# ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Input:
    # folder (searched recursively) or manifest file (one path per line); null: bundled samples
    path: str | None = setting(None, exists="path", hint="give a folder of images or a manifest file")
    # null: common image types (data_engine.io.inputs.IMAGE_EXTENSIONS); or e.g. [.png, .jpg]
    extensions: list[str] | None = setting(None)
    max_pixels: int = setting(50_000_000, ge=1, le=PILLOW_LIMIT)  # larger images are recorded as failed, not decoded
    # images per shard: the unit of work, retry and resume (a GPU's minute of work; docs/cluster.md)
    shard_size: int = setting(256, ge=1)
    # an image not read and decoded within this many seconds is recorded as failed (null: no limit)
    image_timeout_s: float | None = setting(120, gt=0)
    # true: follow symlinks that leave the input folder (false: skip them, listed in run.json)
    follow_symlinks: bool = setting(False)

    def check(self) -> None:
        ext = self.extensions
        require(
            ext is None or (bool(ext) and all(e.startswith(".") for e in ext)),
            "input.extensions",
            f"must be null or a list of extensions with their dot, e.g. [.png, .jpg], got {ext!r}",
        )


@dataclass(frozen=True)
class Output:
    dir: str = setting("out/${stage.name}")  # on a multi-node cluster: a path on shared storage
    overwrite: bool = setting(False)  # true: delete an existing output of a different config instead of refusing
    overlays: int = setting(4, ge=0)  # overlay pictures of the masks written next to the output (0: none)

    def check(self) -> None:
        require(not Path(self.dir).is_file(), "output.dir", f"{self.dir} is a file: give a folder")


@dataclass(frozen=True)
class Runtime:
    name: str = setting("local", choices=("local", "ray_cluster", "serial"))
    address: str | None = setting(None)  # runtime=ray_cluster: HOST:6379, ray://HEAD:10001 or auto
    num_workers: int | None = setting(None, ge=1)  # null: one per GPU, else one per cpus_per_worker CPUs
    cpus_per_worker: float = setting(2, gt=0)  # per GPU worker, docs/cluster.md says how many CPUs keep a GPU fed
    gpus_per_worker: float = setting(1, gt=0)  # used when the cluster has GPUs
    # a shard whose worker dies (node lost, killed, hung) is run again this many times
    max_retries: int = setting(3, ge=0)
    # a worker still on one shard after this many seconds is stopped and its shard redone
    shard_timeout_s: float | None = setting(None, ge=1e-3)
    # how long to wait for a node that can hold a worker before refusing in one line
    placement_timeout_s: float = setting(60, ge=0)
    connect_timeout_s: float = setting(30, ge=1e-3)  # runtime=ray_cluster: how long to wait for the cluster to answer
    progress: bool = setting(True)


@dataclass(frozen=True)
class Model:
    variant: str = setting("tiny")  # the model group's option: tiny (embedded), vit_b/l/h, sam2.1_hiera_t/s/b+/l
    checkpoint: str | None = setting(None, exists="path")  # null: the embedded weights (tiny)
    device: str | None = setting(None)  # null: cuda when available, else cpu
    download: bool = setting(False)  # true: fetch an official checkpoint where there is internet access
    cache_dir: str = setting("~/.cache/data_engine")
    image_size: int | None = setting(None, ge=32)  # SAM 2.1: the input side (1024 for the official weights)

    def check(self) -> None:
        require(
            self.device in (None, "cpu", "cuda") or self.device.startswith("cuda:"),
            "model.device",
            f"{self.device!r} is not cpu, cuda or cuda:N",
        )


@dataclass(frozen=True)
class Debug:
    crash_on_shard: str | None = setting(None)  # fault injection: the worker exits mid-shard on this shard, once
    kill_on_shard: str | None = setting(None)  # fault injection: the worker exits on every attempt of this shard
    hang_on_shard: str | None = setting(None)  # fault injection: the worker stops making progress mid-shard, once


# amg: MaskGenerator's keyword arguments; numbers are >= 0 unless a rule below says otherwise.
AMG_RULES = {
    **dict.fromkeys(
        (
            "pred_iou_thresh",
            "stability_score_thresh",
            "box_nms_thresh",
            "crop_nms_thresh",
            "mask_nms_thresh",
            "candidate_iou_floor",
            "candidate_stability_floor",
        ),
        {"le": 1},
    ),
    "crop_overlap_ratio": {"le": 0.99},
    "max_mask_area_frac": {"le": 1},
    **dict.fromkeys(
        (
            "points_per_side",
            "points_per_batch",
            "crops_per_batch",
            "crop_n_points_downscale_factor",
            "images_per_batch",
            "decoder_batch",
        ),
        {"ge": 1},
    ),
}
# The generator's annotations as the types of the amg section's fields.
AMG_TYPES = {
    "int": int,
    "float": float,
    "bool": bool,
    "int | None": int | None,
    "float | None": float | None,
    "tuple[float, float]": list[float],
}


def check_stability_levels(amg) -> None:
    levels = amg.stability_levels
    require(
        len(levels) == 2 and 0 < levels[0] < levels[1] < 1,
        "amg.stability_levels",
        f"must be two probabilities low < high in (0, 1), got {levels!r}",
    )


@cache
def amg_section() -> type:
    """The amg section's dataclass, one field per MaskGenerator setting (its default and annotation)."""
    fields = []
    for name, (value, annotation) in generator_settings().items():
        kind = AMG_TYPES[annotation]
        rule = {} if kind is bool else {"ge": 0, **AMG_RULES.get(name, {})}
        fields.append((name, kind, setting(list(value) if isinstance(value, tuple) else value, **rule)))
    return make_dataclass("AMG", fields, namespace={"check": check_stability_levels}, frozen=True)


def check_amg(amg: dict):
    """The amg section as its dataclass, or a ConfigError naming the key (for scripts that build a generator)."""
    return parse(amg_section(), amg, "amg")


def shared_sections() -> dict[str, type]:
    """The sections every stage's config holds: {name: dataclass}."""
    from data_engine.detector.settings import Detector
    from data_engine.verifier.settings import Verifier

    return {
        "input": Input,
        "output": Output,
        "runtime": Runtime,
        "model": Model,
        "amg": amg_section(),
        "detector": Detector,
        "verifier": Verifier,
        "debug": Debug,
    }


def register_configs() -> None:
    """Each section's defaults into Hydra's ConfigStore (group `section`, which conf/ starts from) and
    amg/sa1b: the generator's own defaults (the SA-1B recipe). Stored as plain data: the types and
    ranges are checked by `validate`, so every refusal is one line naming the key."""
    from hydra.core.config_store import ConfigStore

    from data_engine.stages import sections

    store = ConfigStore.instance()
    for name, cls in {**shared_sections(), **sections()}.items():
        group, option = ("amg", "sa1b") if name == "amg" else ("section", name)
        store.store(group=group, name=option, node=defaults(cls))


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


def compose(overrides: list[str], values: dict | None = None) -> dict:
    """The project's Hydra config with `overrides` (as on the command line), then `values` ({dotted key:
    Python value}) set, as a plain dict: what the CLI hands to the stages. Hydra's global state is left as
    it was, also inside a running Hydra app (the CLI's engine composes each step's config)."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from omegaconf import OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    register_configs()
    with outside_hydra_app(), initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = hydra_compose(config_name="config", overrides=overrides)
    for key, value in (values or {}).items():
        try:
            OmegaConf.update(cfg, key, value, merge=False)
        except OmegaConfBaseException as err:  # a key of another stage's section, a value of the wrong type
            reason = str(err).strip().splitlines()[0]
            raise ConfigError(f"{key}: cannot be set for stage={cfg.stage.name} ({reason})") from None
    return OmegaConf.to_container(cfg, resolve=True)


@contextmanager
def outside_hydra_app():
    """Compose a config while a Hydra app (the CLI) is running: its global state is set aside meanwhile."""
    from hydra.core.global_hydra import GlobalHydra

    if not GlobalHydra.instance().is_initialized():
        yield
        return
    app = GlobalHydra.instance().hydra
    GlobalHydra.instance().clear()
    try:
        yield
    finally:
        GlobalHydra.instance().clear()
        GlobalHydra.instance().initialize(app)


def validate(cfg: dict):
    """Every key known and every value usable, each section parsed once; the stage's own section as its
    dataclass (None for a stage without one). The model's weights are checked only for a stage that
    loads a model (checking them imports torch)."""
    from data_engine.stages import NO_MODEL, STAGES, sections

    name = cfg["stage"]["name"]
    require(name in STAGES, "stage", f"unknown stage {name!r}; choose from {sorted(STAGES)}")
    known = {**shared_sections(), **{k: v for k, v in sections().items() if k == name}}
    parsed = {}
    for key, value in cfg.items():
        if key not in TOP_LEVEL:
            require(key in known, key, unknown_hint(key, [*TOP_LEVEL, *known]))
            parsed[key] = parse(known[key], value, key)
    if name not in NO_MODEL:
        check_weights(parsed["model"])
    return parsed.get(name)


def check_weights(model: Model) -> None:
    """The model variant exists and its weights can be found (an official variant needs a checkpoint)."""
    from data_engine.model.build import OFFICIAL, SAM2, VARIANTS

    require(model.variant in VARIANTS, "model.variant", f"unknown variant {model.variant!r}; choose from {VARIANTS}")
    if model.variant in SAM2:
        require(model.image_size is not None, "model.image_size", "a SAM 2.1 model needs its input side, e.g. 1024")
        require(model.image_size % 32 == 0, "model.image_size", f"must be a multiple of 32, got {model.image_size}")
    else:
        require(model.image_size is None, "model.image_size", f"is a SAM 2.1 setting; model={model.variant} has none")
    if not model.checkpoint and model.variant in OFFICIAL:
        require(
            model.download,
            "model.checkpoint",
            f"model={model.variant} needs model.checkpoint=/path/to/{OFFICIAL[model.variant][0]} "
            "(or model.download=true on a machine with internet access)",
        )


def unknown_key(dotted: str) -> str | None:
    """Why a key set on the command line (`amg.pred_iou_thres`) is in no section, as one line; None when
    it is known in some stage's config (hydra.* and free-form mappings are not checked)."""
    node, parts = known_keys(), dotted.split(".")
    if parts[0] == "hydra":
        return None
    for i, part in enumerate(parts):
        if not isinstance(node, dict) or (i and not node):
            return None
        if part not in node:
            path = ".".join(parts[: i + 1])
            return f"{path}: {unknown_hint(path, node)}"
        node = node[part]
    return None


@cache
def known_keys() -> dict:
    """Every key of some stage's config: {key: its sub-keys} for config.yaml's own keys and every section."""
    from data_engine.stages import sections

    tree = {"stage": {"name": {}}, "seed": {}, "log_level": {}}
    return {**tree, **{name: keys(cls) for name, cls in {**shared_sections(), **sections()}.items()}}

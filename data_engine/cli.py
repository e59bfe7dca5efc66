"""`data-engine` / `python -m data_engine`: the Hydra entry point for every stage."""

from __future__ import annotations

import ast
import importlib.util
import json
import logging
import os
import sys
from pathlib import Path

import hydra
from hydra.errors import HydraException
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from data_engine.config import CONF_DIR, compose, known_keys, register_configs, unknown_key
from data_engine.errors import ConfigError, UserError

USAGE = """usage: data-engine [stage=NAME] [GROUP=OPTION ...] [key=value ...]

Stages (stage=NAME; default auto):
{stages}

Config groups (GROUP=OPTION):
{groups}

A stage's options, composed and printed without running anything:
  data-engine stage=train --cfg job
Any key can be set on the command line (train.steps=200, input.path=IMAGES, output.dir=OUT);
unknown keys and bad values are refused before any work starts. Hydra's own help: --hydra-help.
"""


INTERRUPTED = "data-engine: interrupted; rerun the same command to resume"


def main() -> None:
    """Answer --help, refuse a mistyped group option or key in one line, then compose and run; Ctrl-C
    ends with one line and exit 130 (finished shards are kept: a rerun resumes)."""
    args = sys.argv[1:]
    if "--help" in args or "-h" in args:
        print(usage())
        return
    bad = bad_group_option(args) or bad_key(args)
    if bad:
        print(f"data-engine: error: {bad}", file=sys.stderr)
        sys.exit(2)
    register_configs()
    try:
        run_composed()
    except KeyboardInterrupt:
        print(INTERRUPTED, file=sys.stderr)
        sys.exit(130)


@hydra.main(version_base="1.3", config_path="conf", config_name="config")
def run_composed(cfg: DictConfig) -> None:
    logging.basicConfig(level=cfg.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        summary = run_checked(OmegaConf.to_container(cfg, resolve=True))
    except UserError as err:
        print(f"data-engine: error: {err}", file=sys.stderr)
        sys.exit(2)
    print(json.dumps(summary, indent=2, default=str))
    problem = summary_problem(summary)
    if problem:
        print(f"data-engine: {problem}", file=sys.stderr)
        sys.exit(1)


def run(stage: str, overrides: list[str] = (), **keys) -> dict:
    """Run a stage from Python with the config and checks of the command
    `data-engine stage=STAGE OVERRIDES... KEY=VALUE...`; returns its summary.

    `overrides`: command-line strings, for group options ("amg=tiny", "runtime=serial") and any key;
    `keys`: keys as Python values, a section's name and its key joined by "_" (input_path=..., output_dir=...,
    train_steps=...; amg_points_per_side=...). A bad key or value raises ConfigError, a bad input or output
    the stage's UserError (the CLI's one-line errors, as exceptions)."""
    args = [f"stage={stage}", *overrides]
    bad = bad_group_option(args) or bad_key(args)
    if bad:
        raise ConfigError(bad)
    values = {config_key(name): os.fspath(v) if isinstance(v, os.PathLike) else v for name, v in keys.items()}
    for key in values:
        if key in groups():
            raise ConfigError(f"{key}: a config group; choose its option with overrides=['{key}=...']")
        if unknown_key(key):
            raise ConfigError(unknown_key(key))
    try:
        cfg = compose(args, values)
    except (HydraException, OmegaConfBaseException) as err:  # an override Hydra cannot parse or apply
        raise ConfigError(f"{' '.join(args)}: {str(err).strip().splitlines()[0]}") from None
    return run_checked(cfg)


def config_key(name: str) -> str:
    """A keyword of `run` as a dotted config key: input_path -> input.path, semi_merge_prefill ->
    semi_merge.prefill (the longest section name the keyword starts with); dotted names pass as they are."""
    if "." in name:
        return name
    for section in sorted(known_keys(), key=len, reverse=True):
        if name.startswith(section + "_"):
            return f"{section}.{name[len(section) + 1 :]}"
    return name


def run_checked(cfg: dict) -> dict:
    """A composed config, output.dir made absolute, checked and run: the CLI's and `run`'s one path to a stage."""
    from data_engine.config import validate
    from data_engine.stages import run_stage

    cfg["output"]["dir"] = str(Path(cfg["output"]["dir"]).expanduser().resolve())
    settings = validate(cfg)  # the one check of the config; the stage gets its section as checked
    return run_stage(cfg, settings)


def summary_problem(summary: dict) -> str | None:
    """Why a finished run still failed its purpose: failed shards, nothing imported, no image processed."""
    if summary.get("shards_failed"):
        return f"{len(summary['shards_failed'])} shards failed; rerun the same command to retry them"
    imported = summary.get("import") or {}
    if imported.get("input_annotations") and not imported.get("imported"):
        kinds = ", ".join(f"{k}: {n}" for k, n in (imported.get("rejected_by_reason") or {}).items())
        report = Path(summary.get("output", ".")) / "import_report.parquet"
        total = imported["input_annotations"]
        return f"every one of the {total} annotations was rejected ({kinds}): see {report} for each reason"
    if "images" in summary and "images_ok" in summary and summary["images_ok"] == 0:
        if summary["images"] == 0:
            return "no input image was found: check input.path and input.extensions"
        return f"none of the {summary['images']} images was processed: see the error column of images/"
    return None


def groups() -> dict[str, list[str]]:
    """Each config group and its options: the yaml files of conf/<group>/ (amg/sa1b is built in code)."""
    found = {
        d.name: sorted(p.stem for p in d.glob("*.yaml"))
        for d in sorted(CONF_DIR.iterdir())
        if d.is_dir() and any(d.glob("*.yaml"))
    }
    found["amg"] = sorted({*found.get("amg", []), "sa1b"})
    return found


def bad_group_option(args: list[str]) -> str | None:
    """`stage=autoo` -> one line listing the valid choices (Hydra's own message spans many lines)."""
    options = groups()
    for arg in args:
        group, sep, value = arg.lstrip("+~").partition("=")
        if sep and group in options and value not in options[group] and value != "null":
            return f"{group}={value}: no such option; choose from {', '.join(options[group])}"
    return None


def bad_key(args: list[str]) -> str | None:
    """`amg.pred_iou_thres=0.5` (no `+`) -> one line with a close key (Hydra's own message spans seven)."""
    options = groups()
    for arg in args:
        key, sep, _ = arg.partition("=")
        if sep and key not in options and key.replace(".", "").replace("_", "").isalnum():
            why = unknown_key(key)
            if why:
                return why
    return None


def usage() -> str:
    from data_engine.stages import STAGES

    stages = "\n".join(f"  {name:<10} {first_line(module)}" for name, module in sorted(STAGES.items()))
    group_lines = "\n".join(f"  {g:<10} {', '.join(opts)}" for g, opts in groups().items())
    return USAGE.format(stages=stages, groups=group_lines)


def first_line(module: str) -> str:
    """A stage's one-line description: the first line of its module docstring (read, not imported)."""
    source = Path(importlib.util.find_spec(module).origin).read_text()
    doc = (ast.get_docstring(ast.parse(source)) or "").strip()
    return doc.splitlines()[0].removeprefix("The ").rstrip(".") if doc else ""

"""An engine's steps: read the engine section, expand rounds, resolve references, compose and check.

The engine section (conf/engine/NAME.yaml) lists steps; an entry is a step or a block of rounds:

    steps:
      - {name: experts, stage: synth, overrides: [synth.seed=7001]}
      - rounds: 3
        steps:
          - {name: import, stage: assisted, overrides: [...]}
          - name: retrain
            stage: train
            overrides: ["train.data=[{all:import}]", "model.checkpoint={last:retrain}/model.pt"]

A step inside `rounds` is named NAME_k, k counting that name's steps through the whole file (a second
block of `retrain` steps goes on from retrain_4). Overrides are Hydra override strings (or a dict of
key: value) with references, each replaced by a folder of the engine's output:

    {STEP}        the output folder of the earlier step STEP (a full name: experts, import_2)
    {last:NAME}   the output folder of the latest earlier step named NAME or NAME_k; where there is
                  none yet (a first round), the whole override is left out, so the step keeps the
                  engine command's setting (its model, for a checkpoint)
    {all:NAME}    the output folders of every earlier step named NAME or NAME_k, comma-separated
                  (for list values: train.data=[{all:import}]); none yet: the override is left out
    {round}       the round number within the step's block (1, 2, ...)

A reference to a step that does not exist, or that comes later, is a ConfigError naming the step.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import tempfile
from pathlib import Path

from data_engine.errors import ConfigError

log = logging.getLogger(__name__)

REFERENCE = re.compile(r"\{(?:(last|all):)?([A-Za-z][A-Za-z0-9_]*)\}")
NAME = re.compile(r"^[a-z][a-z0-9_]*$")
STEP_KEYS = {"name", "stage", "overrides", "external"}
BLOCK_KEYS = {"rounds", "steps"}
# Bounds checked before expanding (SA-1B's engine ran 6 assisted and 5 semi-automatic rounds): a block's
# rounds, and the steps of the whole engine after expansion (each is composed and planned before any runs).
MAX_ROUNDS = 100
MAX_STEPS = 1000
# The sections a step takes from the engine command (the rest comes from its own stage and overrides).
INHERITED = ("runtime", "model", "log_level")
# Characters a folder may not hold to go into an override unquoted.
UNSAFE = set(" \t'\",[]{}=$\\")


def check_references(entries: list) -> list[dict]:
    """The engine's steps expanded (names, stages, rounds) with every reference resolved, or a ConfigError
    naming the step: unknown and forward references are refused before anything runs."""
    steps = expand(entries)
    for step in steps:
        resolve(step, steps, Path("/OUT"))
    return steps


# ----------------------------------------------------------------------------------------------
# Expand: entries and rounds -> a flat list of named steps
# ----------------------------------------------------------------------------------------------


def expand(entries) -> list[dict]:
    """[{name, base, stage, round, overrides (list of strings)}] in order, names unique."""
    from data_engine.stages import STAGES

    if not isinstance(entries, list) or not entries:
        raise ConfigError("engine.steps: give a list of steps ({name, stage, overrides}) and rounds blocks")
    check_size(entries)
    steps, counts = [], {}
    for n, entry in enumerate(entries):
        if isinstance(entry, dict) and "rounds" in entry:
            steps += expand_block(entry, n, counts, STAGES)
        else:
            steps.append(make_step(entry, f"engine.steps[{n}]", None, counts, STAGES))
    names = [s["name"] for s in steps]
    for name in names:
        if names.count(name) > 1:
            raise ConfigError(f"engine step {name}: two steps have this name; give them different names")
    return steps


def check_size(entries: list) -> None:
    """Each block's rounds within [1, MAX_ROUNDS] and at most MAX_STEPS steps in all, before anything is expanded."""
    total = 0
    for n, entry in enumerate(entries):
        if isinstance(entry, dict) and "rounds" in entry:
            rounds, inner = check_block(entry, f"engine.steps[{n}]")
            total += rounds * len(inner)
        else:
            total += 1
    if total > MAX_STEPS:
        raise ConfigError(
            f"engine.steps: expand to {total} steps, above the limit of {MAX_STEPS}; use fewer rounds or steps"
        )


def check_block(entry: dict, where: str) -> tuple[int, list]:
    """(rounds, steps) of a `rounds: N` block, or a ConfigError naming the bad key."""
    if set(entry) - BLOCK_KEYS:
        raise ConfigError(f"{where}: unknown keys {sorted(set(entry) - BLOCK_KEYS)}; a block has rounds and steps")
    rounds, inner = entry["rounds"], entry.get("steps")
    if not isinstance(rounds, int) or isinstance(rounds, bool) or not 1 <= rounds <= MAX_ROUNDS:
        raise ConfigError(f"{where}.rounds: must be an integer >= 1 and <= {MAX_ROUNDS}, got {rounds!r}")
    if not isinstance(inner, list) or not inner:
        raise ConfigError(f"{where}.steps: give the list of steps to repeat")
    return rounds, inner


def expand_block(entry: dict, n: int, counts: dict, stages: dict) -> list[dict]:
    """A `rounds: N` block: its steps N times, in order, each step named NAME_k."""
    where = f"engine.steps[{n}]"
    rounds, inner = check_block(entry, where)
    return [
        make_step(step, f"{where}.steps[{k}]", r, counts, stages)
        for r in range(1, rounds + 1)
        for k, step in enumerate(inner)
    ]


def make_step(entry, where: str, round_: int | None, counts: dict, stages: dict) -> dict:
    """One step: its checked name (suffixed _k in a block), stage and override strings."""
    if not isinstance(entry, dict) or not {"name", "stage"} <= set(entry):
        raise ConfigError(f"{where}: a step needs a name and a stage, got {entry!r}")
    if set(entry) - STEP_KEYS:
        raise ConfigError(f"{where}: unknown keys {sorted(set(entry) - STEP_KEYS)}; a step has {sorted(STEP_KEYS)}")
    base, stage = str(entry["name"]), entry["stage"]
    if not NAME.match(base) or base == "round":
        raise ConfigError(f"{where}.name: {base!r} must be lower-case letters, digits and _ (not 'round')")
    if stage not in stages or stage == "engine":
        raise ConfigError(
            f"engine step {base}: unknown stage {stage!r}; choose from {sorted(set(stages) - {'engine'})}"
        )
    name = base
    if round_ is not None:
        counts[base] = counts.get(base, 0) + 1
        name = f"{base}_{counts[base]}"
    overrides = override_list(entry.get("overrides"), name)
    external = entry.get("external") or []
    if not isinstance(external, list) or not all(isinstance(k, str) and "." in k for k in external):
        raise ConfigError(f"engine step {name}: external must list config keys, e.g. [semi_merge.annotations]")
    return {"name": name, "base": base, "stage": stage, "round": round_, "overrides": overrides, "external": external}


def override_list(overrides, name: str) -> list[str]:
    """Override strings as written, or a {key: value} dict written as key=value (YAML's null/true/false)."""
    if overrides is None:
        return []
    if isinstance(overrides, dict):
        return [f"{key}={scalar(value)}" for key, value in overrides.items()]
    if isinstance(overrides, list) and all(isinstance(o, str) for o in overrides):
        return list(overrides)
    raise ConfigError(f"engine step {name}: overrides must be a list of key=value strings or a key: value mapping")


def scalar(value) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, list):
        return "[" + ",".join(scalar(v) for v in value) + "]"
    return str(value)


# ----------------------------------------------------------------------------------------------
# Resolve: references -> folders of the output tree
# ----------------------------------------------------------------------------------------------


def folder(index: int, name: str) -> str:
    """A step's folder name: its place (01, 02, ...) and name."""
    return f"{index + 1:02d}_{name}"


def resolve(step: dict, steps: list[dict], out_dir: Path) -> dict:
    """{overrides (references replaced), depends (step names), dropped (overrides left out)}."""
    index = next(i for i, s in enumerate(steps) if s["name"] == step["name"])
    earlier = steps[:index]
    bases = {s["base"] for s in steps}
    resolved, depends, dropped = [], [], []
    for text in step["overrides"]:
        value, used = substitute(text, step, earlier, steps, bases, out_dir)
        if value is None:
            dropped.append(text)
            continue
        resolved.append(value)
        depends += [name for name in used if name not in depends]
    return {"overrides": resolved, "depends": depends, "dropped": dropped}


def substitute(text: str, step: dict, earlier: list, steps: list, bases: set, out_dir: Path):
    """(text with every reference replaced, names used), or (None, []) when a last:/all: has none yet."""
    if "{round}" in text:
        if step["round"] is None:
            raise ConfigError(
                f"engine step {step['name']}: {{round}} in {text!r}, but the step is not in a rounds block"
            )
        text = text.replace("{round}", str(step["round"]))
    found = [referenced(*m.groups(), step, earlier, steps, bases, text) for m in REFERENCE.finditer(text)]
    if any(not named for named in found):
        return None, []  # a first round: no earlier step of that name yet
    parts = iter(found)
    value = REFERENCE.sub(
        lambda m: ",".join(str(out_dir / folder(steps.index(s), s["name"])) for s in next(parts)), text
    )
    return value, [s["name"] for named in found for s in named]


def referenced(kind, name: str, step: dict, earlier: list, steps: list, bases: set, text: str) -> list[dict]:
    """The earlier steps a reference names; a ConfigError for a missing or later step."""
    if kind is None:
        match = [s for s in earlier if s["name"] == name]
        if not match:
            later = [s for s in steps if s["name"] == name]
            where = "comes later (or is this step)" if later else "does not exist"
            raise ConfigError(
                f"engine step {step['name']}: {{{name}}} in {text!r} refers to step {name}, which {where}; "
                f"earlier steps: {[s['name'] for s in earlier] or 'none'}"
            )
        return match
    if name not in bases:
        raise ConfigError(
            f"engine step {step['name']}: {{{kind}:{name}}} in {text!r}: no step is named {name} or {name}_k; "
            f"names: {sorted(bases)}"
        )
    match = [s for s in earlier if s["base"] == name]
    return match[-1:] if kind == "last" else match


# ----------------------------------------------------------------------------------------------
# Plan: every step composed, hashed and checked before the first one runs
# ----------------------------------------------------------------------------------------------


def plan(cfg: dict) -> list[dict]:
    """Every step of the engine command `cfg`: {name, stage, folder, dir, overrides, depends, dropped,
    hash, cfg (its composed config)}; a ConfigError naming the step if any of them cannot run."""
    out_dir = Path(cfg["output"]["dir"])
    if UNSAFE & set(str(out_dir)):
        raise ConfigError(
            f"output.dir: {out_dir} holds characters ({''.join(sorted(UNSAFE & set(str(out_dir))))!r}) that cannot "
            "go into the steps' overrides; choose a plain path"
        )
    steps = expand(cfg["engine"].get("steps"))
    planned, hashes = [], {}
    for index, step in enumerate(steps):
        refs = resolve(step, steps, out_dir)
        step_dir = out_dir / folder(index, step["name"])
        step_cfg = compose_step(step["name"], step["stage"], refs["overrides"], step_dir, cfg)
        hashes[step["name"]] = definition_hash(step, refs, step_cfg, hashes, out_dir)
        planned.append(
            {
                **step,
                **refs,
                "folder": step_dir.name,
                "dir": str(step_dir),
                "hash": hashes[step["name"]],
                "cfg": step_cfg,
            }
        )
    check_steps(planned, out_dir)
    return planned


def compose_step(name: str, stage: str, overrides: list[str], step_dir: Path, engine_cfg: dict) -> dict:
    """The step's config as its own command would compose it, with the engine command's runtime, log
    level and model (the model keys the step sets itself win; `model=...` in a step replaces it)."""
    from data_engine.config import compose

    try:
        cfg = compose([f"stage={stage}", *overrides, f"output.dir={step_dir}"])
        keys = override_keys(overrides)
    except Exception as err:  # Hydra's parse and composition errors: one line naming the step
        raise ConfigError(f"engine step {name}: {first_line(err)}") from None
    cfg["runtime"], cfg["log_level"] = engine_cfg["runtime"], engine_cfg["log_level"]
    if "model" not in keys:
        own = {k: v for k, v in cfg["model"].items() if f"model.{k}" in keys}
        cfg["model"] = {**engine_cfg["model"], **own}
    return cfg


def override_keys(overrides: list[str]) -> set[str]:
    """The keys (or groups) that override strings set: 'model.checkpoint', 'amg', ..."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    return {o.key_or_group for o in OverridesParser.create().parse_overrides(overrides)}


def first_line(err: Exception) -> str:
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__


def definition_hash(step: dict, refs: dict, step_cfg: dict, hashes: dict, out_dir: Path) -> str:
    """SHA-256 of what defines a step: stage, resolved overrides (the output folder written as OUT, so a
    moved tree keeps its hashes), the model it inherits, and the hashes of the steps it refers to."""
    doc = {
        "stage": step["stage"],
        "overrides": [o.replace(str(out_dir), "OUT") for o in refs["overrides"]],
        "model": step_cfg["model"],
        "depends": {name: hashes[name] for name in refs["depends"]},
    }
    return hashlib.sha256(json.dumps(doc, sort_keys=True, default=str).encode()).hexdigest()


def check_steps(planned: list[dict], out_dir: Path) -> None:
    """Validate every step's config before any runs. Paths that earlier steps will write are stood in
    for by empty placeholders; a check that needs their content is done when the step runs."""
    from data_engine.config import validate

    with tempfile.TemporaryDirectory(prefix="engine-check-") as tmp:
        for step in planned:
            dirs = [str(out_dir / s["folder"]) for s in planned if s["name"] in step["depends"]]
            cfg = stand_ins(step["cfg"], dirs, out_dir, Path(tmp))
            for key in step["external"]:
                set_stand_in(cfg, key, Path(tmp) / "external" / step["name"])
            try:
                validate(cfg)
            except ConfigError as err:
                if tmp not in str(err):
                    raise ConfigError(f"engine step {step['name']}: {err}") from None
                log.info("engine step %s: checked when it runs (%s)", step["name"], first_line(err))


def stand_ins(value, dirs: list[str], out_dir: Path, tmp: Path):
    """`value` with each path under a not-yet-written step folder moved to an empty stand-in under tmp
    (a folder for the step's own folder, a file for a path with a suffix, else a folder)."""
    if isinstance(value, dict):
        return {k: stand_ins(v, dirs, out_dir, tmp) for k, v in value.items()}
    if isinstance(value, list):
        return [stand_ins(v, dirs, out_dir, tmp) for v in value]
    if not isinstance(value, str) or Path(value).exists():
        return value
    for d in dirs:
        if value == d or value.startswith(d + "/"):
            path = tmp / Path(value).relative_to(out_dir)
            if Path(value).suffix and value != d:
                path.parent.mkdir(parents=True, exist_ok=True)
                path.touch()
            else:
                path.mkdir(parents=True, exist_ok=True)
            return str(path)
    return value


def lookup(cfg: dict, key: str):
    """The value at a dotted key, or a ConfigError naming the step's external key."""
    node = cfg
    for part in key.split("."):
        if not isinstance(node, dict) or part not in node:
            raise ConfigError(f"external: {key} is not a config key of the step")
        node = node[part]
    return node


def set_stand_in(cfg: dict, key: str, tmp: Path) -> None:
    """An external input (written outside the loop, e.g. annotators' export) stood in for by an empty
    file (or folder, for a path without a suffix) named like it."""
    value = lookup(cfg, key)
    if not value or Path(str(value)).exists():
        return
    path = tmp / Path(str(value)).name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.touch() if path.suffix else path.mkdir(exist_ok=True)
    *parents, leaf = key.split(".")
    node = cfg
    for part in parents:
        node = node[part]
    node[leaf] = str(path)

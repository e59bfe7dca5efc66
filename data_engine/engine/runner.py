"""Run an engine's steps in order under one output folder, OUT/<NN>_<step>/ each, as its stage writes it.

A step's record (OUT/_engine/<NN>_<step>.json: its definition hash, status and summary) marks it done.
A rerun skips done steps, resumes an interrupted or failed one in its folder (the stage's own resume),
and recomputes a step whose definition changed together with every step after it, saying so.
"""

from __future__ import annotations

import json
import logging
import shutil
import time
from contextlib import contextmanager
from pathlib import Path

from data_engine.engine import evaluate, report
from data_engine.engine.steps import first_line, lookup, plan
from data_engine.errors import UserError
from data_engine.io.atomic import write_text_atomic
from data_engine.stages.engine import Engine

log = logging.getLogger(__name__)

RECORDS = "_engine"


class StepFailed(UserError, RuntimeError):
    """A step's stage failed; the message names the step and its error."""


def run_engine(cfg: dict, settings: Engine) -> dict:
    """Plan and check every step, run them in order, evaluate each retrained model, write the report."""
    out_dir = Path(cfg["output"]["dir"])
    steps = plan(cfg)
    evaluation = settings.evaluate
    out_dir.mkdir(parents=True, exist_ok=True)
    note_strays(out_dir, steps)
    log.info("engine: %d steps under %s: %s", len(steps), out_dir, ", ".join(s["folder"] for s in steps))
    rerun = False  # once a step runs, every later step runs too
    try:
        with torch_threads(settings.num_threads):
            for step in steps:
                rerun = run_step(step, out_dir, rerun) or rerun
                if evaluation:
                    evaluate.models(cfg, steps, evaluation, out_dir, lambda s: read_record(out_dir, s))
    finally:
        doc = report.write(cfg, steps, evaluation, out_dir, lambda s: read_record(out_dir, s))
    return {"output": str(out_dir), "steps": len(steps), **doc["totals"], "report": str(out_dir / report.HTML)}


@contextmanager
def torch_threads(num_threads: int | None):
    """engine.num_threads torch CPU threads for the loop (None: torch's default), restored afterwards.
    Sums split across threads round differently, so a trained model's figures depend on the count; one
    count for every machine makes them the same on machines of other core counts."""
    import torch

    before = torch.get_num_threads()
    if num_threads:
        torch.set_num_threads(num_threads)
        log.info("engine: %d torch threads (engine.num_threads)", num_threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def record_path(out_dir: Path, step: dict) -> Path:
    return out_dir / RECORDS / f"{step['folder']}.json"


def read_record(out_dir: Path, step: dict) -> dict | None:
    path = record_path(out_dir, step)
    return json.loads(path.read_text()) if path.is_file() else None


def write_record(out_dir: Path, step: dict, **fields) -> None:
    doc = {"step": step["name"], "stage": step["stage"], "hash": step["hash"], **fields}
    write_text_atomic(json.dumps(doc, indent=2, default=str), record_path(out_dir, step))


def note_strays(out_dir: Path, steps: list[dict]) -> None:
    """Step folders and records of an earlier plan (a step renamed, added or removed) are left alone."""
    known = {s["folder"] for s in steps}
    strays = [p.name for p in out_dir.glob("[0-9][0-9]_*") if p.is_dir() and p.name not in known]
    if strays:
        log.warning("engine: folders %s are not steps of this engine; they are left as they are", sorted(strays))


def run_step(step: dict, out_dir: Path, rerun: bool) -> bool:
    """Skip, resume or (re)compute one step; True when it ran."""
    record, step_dir = read_record(out_dir, step), Path(step["dir"])
    same = record is not None and record["hash"] == step["hash"]
    if same and record["status"] == "done" and not rerun:
        log.info("engine: %s done, skipped", step["folder"])
        return False
    resuming = same and not rerun and step_dir.exists()
    if resuming:
        log.info(
            "engine: %s resuming (it %s)",
            step["folder"],
            "was interrupted" if record["status"] == "running" else "failed",
        )
    elif record is not None or step_dir.exists():
        why = "an earlier step was recomputed" if rerun else "its definition changed" if record else "no record of it"
        log.warning("engine: %s recomputed from scratch: %s", step["folder"], why)
        shutil.rmtree(step_dir, ignore_errors=True)
    else:
        log.info("engine: %s (%s) starting", step["folder"], step["stage"])
    write_record(out_dir, step, status="running")
    evaluate.forget(out_dir, step["name"])  # a model made again is measured again
    start = time.time()
    try:
        summary = run_checked(step, resuming)
    except StepFailed as err:
        write_record(out_dir, step, status="failed", error=str(err))
        raise
    except Exception as err:
        message = f"engine step {step['folder']} ({step['stage']}) failed: {type(err).__name__}: {first_line(err)}"
        log.error("%s", message, exc_info=not isinstance(err, UserError))
        write_record(out_dir, step, status="failed", error=message)
        raise StepFailed(f"{message}. Fix it and rerun the same command: it goes on from this step") from err
    write_record(out_dir, step, status="done", summary=summary, seconds=round(time.time() - start, 2))
    log.info("engine: %s done in %.1f s", step["folder"], time.time() - start)
    return True


def run_checked(step: dict, resuming: bool) -> dict:
    """The step's config checked again (its inputs exist now), then its stage; failed shards fail it.
    A resumed stage that refuses its folder (its input files changed since) starts afresh."""
    from data_engine.config import validate
    from data_engine.runtime.runs import OutputConflict
    from data_engine.stages import run_stage

    for key in step["external"]:
        path = lookup(step["cfg"], key)
        if path and not Path(str(path)).expanduser().exists():
            raise StepFailed(
                f"engine step {step['folder']} waits for {key}={path}, written outside the loop (e.g. the "
                "annotators' export); rerun the same command once it is there"
            )
    settings = validate(step["cfg"])
    try:
        summary = run_stage(step["cfg"], settings)
    except OutputConflict:
        if not resuming:
            raise
        log.warning("engine: %s: its inputs changed since it started; starting it afresh", step["folder"])
        shutil.rmtree(step["dir"], ignore_errors=True)
        summary = run_stage(step["cfg"], settings)
    if summary.get("shards_failed"):
        failed = summary["shards_failed"]
        raise RuntimeError(f"{len(failed)} shards failed (first: {next(iter(failed))}: {next(iter(failed.values()))})")
    return summary

"""Each stage is a module with `run(cfg: dict) -> dict` (a summary). Plain dict, imported on use."""

import importlib

STAGES = {
    "annotate": "data_engine.stages.annotate",
    "auto": "data_engine.stages.auto",
    "assisted": "data_engine.stages.assisted",
    "audit": "data_engine.stages.audit",
    "detector": "data_engine.stages.detector",
    "engine": "data_engine.stages.engine",
    "export": "data_engine.stages.export",
    "release": "data_engine.stages.release",
    "semi": "data_engine.stages.semi",
    "semi_merge": "data_engine.stages.semi_merge",
    "synth": "data_engine.stages.synth",
    "train": "data_engine.stages.train",
    "verifier": "data_engine.stages.verifier",
}
# Stages that load no model: their model section is not checked (checking it imports torch).
NO_MODEL = {"export", "release", "synth"}


def run_stage(cfg: dict) -> dict:
    """Run the stage holding output.dir's lock: a second run on the same folder refuses (runtime/lock.py)."""
    from data_engine.runtime.lock import output_lock

    with output_lock(cfg["output"]["dir"]):
        return importlib.import_module(STAGES[cfg["stage"]["name"]]).run(cfg)

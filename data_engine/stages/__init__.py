"""Each stage is a module with `run(cfg: dict, settings) -> dict` (a summary): `cfg` is the composed
config as a plain dict, `settings` the stage's own section as its dataclass (None for a stage without
one), checked once by config.validate. Plain dict, imported on use."""

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
    "sweep": "data_engine.stages.sweep",
    "synth": "data_engine.stages.synth",
    "train": "data_engine.stages.train",
    "verifier": "data_engine.stages.verifier",
}
# Stages that load no model: their model section is not checked (checking it imports torch).
NO_MODEL = {"export", "release", "sweep", "synth", "verifier"}


def sections() -> dict:
    """Each stage's own section, named like the stage: {name: the dataclass its run() receives}. The
    modules holding them import without torch (composing any config registers every section)."""
    from data_engine.detector.settings import DetectorTraining
    from data_engine.stages.annotate import Annotate
    from data_engine.stages.assisted import Assisted
    from data_engine.stages.audit import Audit
    from data_engine.stages.engine import Engine
    from data_engine.stages.export import Export
    from data_engine.stages.release import Release
    from data_engine.stages.semi import Semi
    from data_engine.stages.semi_merge import SemiMerge
    from data_engine.stages.sweep import Sweep
    from data_engine.stages.synth import Synth
    from data_engine.train.settings import Train
    from data_engine.verifier.settings import VerifierTraining

    return {
        "annotate": Annotate,
        "assisted": Assisted,
        "audit": Audit,
        "detector": DetectorTraining,
        "engine": Engine,
        "export": Export,
        "release": Release,
        "semi": Semi,
        "semi_merge": SemiMerge,
        "sweep": Sweep,
        "synth": Synth,
        "train": Train,
        "verifier": VerifierTraining,
    }


def run_stage(cfg: dict, settings=None) -> dict:
    """Run the stage holding output.dir's lock: a second run on the same folder refuses (runtime/lock.py).
    settings: the stage's section as config.validate returned it; None: parsed here, for callers that
    did not validate (a bad value is refused before the lock is taken)."""
    from data_engine.runtime.lock import output_lock
    from data_engine.schema import parse

    name = cfg["stage"]["name"]
    if settings is None and name in sections():
        settings = parse(sections()[name], cfg[name], name)
    with output_lock(cfg["output"]["dir"]):
        return importlib.import_module(STAGES[name]).run(cfg, settings)

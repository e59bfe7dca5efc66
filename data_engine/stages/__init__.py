"""Each stage is a module with `run(cfg: dict) -> dict` (a summary). Plain dict, imported on use."""
import importlib

STAGES = {
    "auto": "data_engine.stages.auto",
}


def run_stage(cfg: dict) -> dict:
    return importlib.import_module(STAGES[cfg["stage"]["name"]]).run(cfg)

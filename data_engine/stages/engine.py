"""The engine stage: the data engine as one loop, every step a stage (data_engine.engine)."""

from __future__ import annotations


def run(cfg: dict) -> dict:
    """Run engine=NAME's steps in order under output.dir; skips finished steps, resumes an interrupted one."""
    from data_engine.engine.runner import run_engine

    return run_engine(cfg)


def check(section: dict) -> dict:
    """The engine section's shape (steps, rounds, references), or a ConfigError naming the step."""
    from data_engine.engine.steps import check_section

    return check_section(section)

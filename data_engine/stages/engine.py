"""The engine stage: the data engine as one loop, every step a stage (data_engine.engine)."""

from __future__ import annotations

from dataclasses import dataclass

from data_engine.schema import setting


@dataclass(frozen=True)
class Engine:
    """The engine group's section (conf/engine/NAME.yaml): its steps and how the loop runs them."""

    description: str = setting("")  # one line for the report
    data: str | None = setting(None)  # a folder the steps refer to as ${engine.data} (e.g. the annotators' batches)
    # torch CPU threads for every in-process step and the evaluation (null: torch's default)
    num_threads: int | None = setting(None, ge=1)
    evaluate: dict | None = setting(None)  # each retrained model measured on held-out experts (engine.evaluate)
    steps: list = setting([])  # steps and `rounds` blocks (data_engine.engine.steps says how they read)

    def check(self) -> None:
        """Names, stages, rounds and references of the steps, before anything runs."""
        from data_engine.engine.steps import check_references

        check_references(self.steps)


def run(cfg: dict, settings: Engine) -> dict:
    """Run engine=NAME's steps in order under output.dir; skips finished steps, resumes an interrupted one."""
    from data_engine.engine.runner import run_engine

    return run_engine(cfg)

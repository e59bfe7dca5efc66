"""The engine stage: the data engine as one loop, every step a stage (data_engine.engine)."""

from __future__ import annotations

from dataclasses import dataclass

from data_engine.errors import require
from data_engine.schema import setting


@dataclass(frozen=True)
class Evaluate:
    """Each retrained model measured on a held-out expert set (engine.evaluate; absent: no evaluation)."""

    # the step holding the held-out expert set (never trained on), e.g. a synth step
    experts: str = setting("", required="name the step that writes the held-out expert set")
    max_images: int = setting(200, ge=1)  # the expert set's first images (by file name) measured
    min_area: int = setting(100, ge=1)  # objects prompted with a single point have at least this many pixels
    amg: dict = setting({})  # generator settings over the engine command's amg (e.g. {points_per_side: 16})


@dataclass(frozen=True)
class Engine:
    """The engine group's section (conf/engine/NAME.yaml): its steps and how the loop runs them."""

    description: str = setting("")  # one line for the report
    data: str | None = setting(None)  # a folder the steps refer to as ${engine.data} (e.g. the annotators' batches)
    # torch CPU threads for every in-process step and the evaluation (null: torch's default)
    num_threads: int | None = setting(None, ge=1)
    evaluate: Evaluate | None = setting(None)  # each retrained model measured on held-out experts
    # the learning rate a recipe's retraining steps refer to as ${engine.retrain_lr} (sa1b_vit_h, sa1b_sam2)
    retrain_lr: float = setting(1.0e-5, gt=0)
    steps: list = setting([])  # steps and `rounds` blocks (data_engine.engine.steps says how they read)

    def check(self) -> None:
        """Names, stages, rounds and references of the steps, and the evaluation's expert step, before
        anything runs."""
        from data_engine.engine.steps import check_references

        names = [step["name"] for step in check_references(self.steps)]
        require(
            self.evaluate is None or self.evaluate.experts in names,
            "engine.evaluate.experts",
            f"{self.evaluate and self.evaluate.experts!r} is not a step of this engine; name the step that writes "
            f"the held-out expert set (e.g. a synth step), one of {names}",
        )


def run(cfg: dict, settings: Engine) -> dict:
    """Run engine=NAME's steps in order under output.dir; skips finished steps, resumes an interrupted one."""
    from data_engine.engine.runner import run_engine

    return run_engine(cfg, settings)

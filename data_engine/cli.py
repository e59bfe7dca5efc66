"""`data-engine` / `python -m data_engine`: the Hydra entry point for every stage."""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path

import hydra
from omegaconf import DictConfig, OmegaConf

from data_engine.errors import UserError


@hydra.main(version_base="1.3", config_path="conf", config_name="config")
def main(cfg: DictConfig) -> None:
    logging.basicConfig(level=cfg.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    plain = OmegaConf.to_container(cfg, resolve=True)
    plain["output"]["dir"] = str(Path(plain["output"]["dir"]).expanduser().resolve())
    try:
        from data_engine.config import validate
        from data_engine.stages import run_stage

        validate(plain)
        summary = run_stage(plain)
    except Exception as err:
        if not isinstance(err, UserError):
            raise
        print(f"data-engine: error: {err}", file=sys.stderr)
        sys.exit(2)
    print(json.dumps(summary, indent=2, default=str))
    if summary.get("shards_failed"):
        print(
            f"data-engine: {len(summary['shards_failed'])} shards failed; rerun the same command to retry them",
            file=sys.stderr,
        )
        sys.exit(1)

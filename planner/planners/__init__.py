"""Planner registry: `--planner` takes a built-in name or a checkpoint path."""

from __future__ import annotations

import difflib
import importlib
from pathlib import Path
from typing import Any

from planner.base import Planner
from planner.errors import UserError

# name -> "module:factory". Factories take keyword options and return a Planner.
BUILTIN_PLANNERS: dict[str, str] = {
    "const-vel": "planner.planners.baselines:ConstantVelocityPlanner",
    "ctra": "planner.planners.baselines:CTRAPlanner",
    "idm": "planner.planners.baselines:IDMLaneKeepingPlanner",
    "expert": "planner.planners.expert:ExpertPlanner",
}


def available_planners() -> list[str]:
    return sorted(BUILTIN_PLANNERS)


def make_planner(spec: str, **options: Any) -> Planner:
    """Build a planner from a built-in name (see `available_planners()`) or a checkpoint."""
    if spec in BUILTIN_PLANNERS:
        module_name, attr = BUILTIN_PLANNERS[spec].split(":")
        factory = getattr(importlib.import_module(module_name), attr)
        return factory(**options)
    path = Path(spec)
    if path.suffix in (".safetensors", ".pt", ".ckpt") or path.is_dir() or path.exists():
        if not path.exists():
            raise UserError(f"checkpoint {spec!r} does not exist")
        loader = _checkpoint_loader()
        return loader(path, **options)
    close = difflib.get_close_matches(spec, available_planners(), n=1)
    hint = f"did you mean {close[0]!r}? " if close else ""
    raise UserError(
        f"unknown planner {spec!r}; {hint}valid names: {', '.join(available_planners())}, "
        "or a checkpoint path"
    )


def check_planner_spec(spec: str) -> None:
    """Fail up front, before any worker starts or any log is read: a wrong planner name
    raises a UserError listing the valid ones; a checkpoint path is loaded once here, so a
    corrupt or mismatched checkpoint is one clear error instead of one per episode."""
    if spec in BUILTIN_PLANNERS:
        return
    make_planner(spec)


def _checkpoint_loader():
    try:
        from planner.model.checkpoint import load_planner  # arrives with the VLA model
    except ImportError:
        raise UserError(
            "this cocdrive has no learned-planner loader yet (planner.model); pass a built-in "
            f"planner name instead: {', '.join(available_planners())}"
        ) from None
    return load_planner

"""Where the shipped YAML configs live, for a source checkout and for an installed wheel.

In a checkout (and an editable install) they are the repository's `configs/`; a wheel ships
the same files as the package `cocdrive_configs` (see pyproject.toml). `COCDRIVE_CONFIG_DIR`
overrides both, for a site-specific set of defaults."""

from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path

ENV_VAR = "COCDRIVE_CONFIG_DIR"


@lru_cache(maxsize=1)
def config_root() -> Path:
    override = os.environ.get(ENV_VAR)
    if override:
        root = Path(override).expanduser()
        if not root.is_dir():
            raise FileNotFoundError(f"{ENV_VAR}={override!r} is not a directory")
        return root
    checkout = Path(__file__).resolve().parents[1] / "configs"
    if checkout.is_dir():
        return checkout
    try:
        import cocdrive_configs  # installed from a wheel

        return Path(cocdrive_configs.__file__).resolve().parent
    except ImportError:
        raise FileNotFoundError(
            "cannot find cocdrive's configs/: reinstall the package (pip install cocdrive) or "
            f"set {ENV_VAR} to a copy of the repository's configs/ folder"
        ) from None


def config_path(*parts: str) -> Path:
    """Path of a shipped config file, e.g. config_path('scenarios', 'smoke.yaml')."""
    return config_root().joinpath(*parts)


def resolve_config_file(path: str | Path) -> Path:
    """A config path as the user wrote it: as is when it exists, else a relative
    `configs/...` path is looked up among the shipped configs (so commands work outside the
    repository root and from an installed wheel)."""
    p = Path(path).expanduser()
    if p.exists() or p.is_absolute():
        return p
    parts = p.parts
    if parts and parts[0] == "configs":
        shipped = config_root().joinpath(*parts[1:])
        if shipped.exists():
            return shipped
    return p

"""Where inputs and outputs live, and the one message for missing data."""
from __future__ import annotations

import os
from pathlib import Path


class DataMissingError(FileNotFoundError):
    """An input under data/ is absent: the user has not run `dvc pull` yet."""


def project_root(start: str | Path | None = None) -> Path:
    """The folder holding dvc.yaml/params.yaml: $IFN_ROOT, else the first parent of `start` (cwd) with one."""
    env = os.environ.get("IFN_ROOT")
    if env:
        return Path(env).resolve()
    here = Path(start or Path.cwd()).resolve()
    for folder in (here, *here.parents):
        if (folder / "dvc.yaml").exists() or (folder / "params.yaml").exists():
            return folder
    # Installed in editable mode from the source tree: src/ifn/paths.py -> project root.
    return Path(__file__).resolve().parents[2]


def resolve(path: str | Path, root: str | Path | None = None) -> Path:
    """`path` if absolute, else relative to the project root."""
    path = Path(path)
    return path if path.is_absolute() else project_root(root) / path


def require_data(path: str | Path, what: str = "input") -> Path:
    """Return `path` resolved, or raise DataMissingError telling the user how to get it."""
    full = resolve(path)
    if not full.exists():
        raise DataMissingError(
            f"{what} not found: {full}\n"
            f"The data/ folder is tracked by DVC. From the project root run:  dvc pull\n"
            f"(or `make data`, which also sets up the environment).")
    return full

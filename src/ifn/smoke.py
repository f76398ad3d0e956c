"""The smoke run: the real pipeline (dvc.yaml, notebooks, package) on tiny sizes in a scratch project.

    python -m ifn.smoke [WORKDIR]      (default: a temporary folder, removed afterwards unless --keep)

The scratch project gets copies of dvc.yaml and notebooks/, a params.yaml = params.yaml + smoke.yaml
overrides, and links to data/ and src/; then `dvc repro` runs every stage there. Nothing in the project's own
outputs, cache or dvc.lock is touched.
"""
from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

from .paths import project_root, require_data


def smoke_params(root: Path) -> dict:
    """params.yaml with the smoke.yaml overrides applied (validated)."""
    from .config import Params

    raw = yaml.safe_load((root / "params.yaml").read_text())
    for key, value in yaml.safe_load((root / "smoke.yaml").read_text()).items():
        node = raw
        *parents, leaf = key.split(".")
        for p in parents:
            node = node[p]
        if leaf not in node:
            raise KeyError(f"smoke.yaml: {key} is not a key of params.yaml")
        node[leaf] = value
    Params.from_dict(raw)
    return raw


def prepare(workdir: Path, root: Path | None = None) -> Path:
    root = root or project_root()
    require_data(root / "data" / "face_model", "face model data")
    workdir.mkdir(parents=True, exist_ok=True)
    shutil.copy2(root / "dvc.yaml", workdir / "dvc.yaml")
    shutil.copytree(root / "notebooks", workdir / "notebooks", dirs_exist_ok=True)
    (workdir / "params.yaml").write_text(yaml.safe_dump(smoke_params(root), sort_keys=False))
    for name in ("data", "src"):
        if not (workdir / name).exists():
            (workdir / name).symlink_to(root / name, target_is_directory=True)
    subprocess.run(["dvc", "init", "--no-scm", "-q"], cwd=workdir, check=True, env=_env())
    subprocess.run(["dvc", "config", "core.analytics", "false"], cwd=workdir, check=True, env=_env())
    return workdir


def _env() -> dict:
    env = dict(os.environ)
    bindir = str(Path(sys.executable).parent)  # the venv's papermill, dvc and python
    env["PATH"] = bindir + os.pathsep + env.get("PATH", "")
    env.pop("IFN_ROOT", None)
    return env


def run(workdir: Path, root: Path | None = None) -> dict:
    """Prepare the scratch project and `dvc repro` it; returns {"seconds": ..., "workdir": ...}."""
    t0 = time.perf_counter()
    prepare(workdir, root)
    proc = subprocess.run(["dvc", "repro"], cwd=workdir, env=_env(), capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"smoke `dvc repro` failed in {workdir}:\n{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}")
    return {"seconds": time.perf_counter() - t0, "workdir": str(workdir), "log": proc.stdout}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description="Run the whole pipeline on the smoke configuration.")
    ap.add_argument("workdir", nargs="?")
    ap.add_argument("--keep", action="store_true", help="keep the temporary scratch project")
    args = ap.parse_args(argv)
    workdir = Path(args.workdir) if args.workdir else Path(tempfile.mkdtemp(prefix="ifn-smoke-"))
    try:
        result = run(workdir)
        print(result["log"])
        print(f"smoke pipeline finished in {result['seconds']:.0f} s ({workdir})")
    finally:
        if not args.workdir and not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Project habits: pins agree, notebooks are stored stripped with the pinned kernel, README commands, atomic writes."""
from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import yaml

from ifn.atomic import atomic_path, save_json

ROOT = Path(__file__).resolve().parents[1]


def _pins(lines):
    pins = {}
    for line in lines:
        line = line.split("#")[0].strip()
        m = re.fullmatch(r"([A-Za-z0-9_.\-]+)==([^\s]+)", line)
        if m:
            pins[m.group(1).lower()] = m.group(2)
    return pins


def test_requirements_and_environment_yml_agree():
    req = _pins((ROOT / "requirements.txt").read_text().splitlines())
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    pip_list = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict) and "pip" in d)
    assert req == _pins(pip_list)
    assert req["torch"] == "2.13.0"
    assert "torchvision" not in req


def test_notebooks_are_stripped_and_pin_the_kernel():
    notebooks = sorted((ROOT / "notebooks").glob("*.ipynb"))
    assert notebooks
    for path in notebooks:
        nb = json.loads(path.read_text())
        assert nb["metadata"]["kernelspec"]["name"] == "ifn", path.name
        code = [c for c in nb["cells"] if c["cell_type"] == "code"]
        assert all(not c.get("outputs") and c.get("execution_count") is None for c in code), path.name
        assert any("parameters" in c.get("metadata", {}).get("tags", []) for c in code), path.name


def test_every_stage_notebook_is_declared_in_dvc_yaml():
    dvc = yaml.safe_load((ROOT / "dvc.yaml").read_text())
    for name, stage in dvc["stages"].items():
        stage = stage.get("do", stage)  # foreach stages keep their body under `do`
        nb = re.search(r"notebooks/\S+\.ipynb", stage["cmd"]).group(0)
        assert nb in stage["deps"], name
        assert stage["cmd"].startswith("python -m ifn.notebook "), name  # kernel pinned there


def test_readme_names_two_commands_and_ci_runs_the_test_one():
    readme = (ROOT / "README.md").read_text()
    assert "make repro" in readme and "make test" in readme
    ci = (ROOT / ".ci" / "run").read_text()
    assert [l for l in ci.splitlines() if l and not l.startswith("#") and not l.startswith(("set ", "cd "))] == [
        "make test"]


def test_atomic_write_leaves_nothing_on_crash(tmp_path):
    target = tmp_path / "out.json"
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_text("half")
            raise RuntimeError("crash mid-write")
    assert not target.exists() and list(tmp_path.iterdir()) == []
    save_json(target, {"a": 1})
    assert json.loads(target.read_text()) == {"a": 1}
    # A folder is replaced whole.
    folder = tmp_path / "shards"
    for content in ("first", "second"):
        with atomic_path(folder) as tmp:
            tmp.mkdir()
            (tmp / "x.txt").write_text(content)
    assert (folder / "x.txt").read_text() == "second" and len(list(tmp_path.iterdir())) == 2

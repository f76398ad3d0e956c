"""Run a stage notebook with Papermill: `python -m ifn.notebook IN.ipynb OUT.ipynb [-p NAME VALUE ...]`.

The kernel is pinned to `ifn` (installed into the venv by `make setup`), the output folder is created, and
the executed copy is written atomically: a failed run leaves no executed notebook that looks complete
(Papermill's partial output is kept beside it as OUT.failed.ipynb for debugging).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import yaml

KERNEL = "ifn"


def run(notebook: str | Path, output: str | Path, parameters: dict | None = None) -> Path:
    import papermill

    output = Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    partial = output.with_suffix(".partial.ipynb")
    failed = output.with_suffix(".failed.ipynb")
    failed.unlink(missing_ok=True)
    try:
        papermill.execute_notebook(str(notebook), str(partial), parameters=parameters or {},
                                   kernel_name=KERNEL, log_output=True, progress_bar=False)
    except BaseException:
        if partial.exists():
            partial.replace(failed)
        raise
    partial.replace(output)
    return output


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("notebook")
    ap.add_argument("output")
    ap.add_argument("-p", "--parameter", nargs=2, action="append", default=[], metavar=("NAME", "VALUE"),
                    help="notebook parameter; VALUE is parsed as YAML (numbers, lists, strings)")
    args = ap.parse_args(argv)
    run(args.notebook, args.output, {k: yaml.safe_load(v) for k, v in args.parameter})
    return 0


if __name__ == "__main__":
    sys.exit(main())

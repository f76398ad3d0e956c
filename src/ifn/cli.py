"""`ifn` command line: argument parsing only; the work is done by library functions."""
from __future__ import annotations

import argparse
import sys


def cmd_info(args) -> int:
    """Print the configured face model, parameter layout and renderer settings."""
    from .config import load_params
    from .model.facemodel import load_face_model
    from .model.layout import ParamLayout

    params = load_params(args.params)
    fm = load_face_model(params.face_model)
    layout = ParamLayout(fm.n_shape, fm.n_expression, params.reflectance.n_components)
    print(f"face model   {fm.name}: {fm.n_vertices} vertices, {fm.triangles.shape[0]} triangles, "
          f"{fm.n_shape} identity modes, {fm.n_expression} expressions")
    print("layout       " + ", ".join(f"{k} {s.start}:{s.stop}" for k, s in layout.slices.items())
          + f" ({layout.size} values)")
    r = params.render
    print(f"render       {r.image_size}px, fov {r.fov_deg} deg, distance {r.distance_cm} cm")
    return 0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="ifn", description="InverseFaceNet re-created (see README.md)")
    parser.add_argument("--params", default="params.yaml", help="params file (default: params.yaml)")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("info", help=cmd_info.__doc__).set_defaults(func=cmd_info)
    args = parser.parse_args(argv)
    from .config import ParamsError
    from .paths import DataMissingError

    try:
        return args.func(args)
    except (ParamsError, DataMissingError) as err:
        print(f"ifn: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())

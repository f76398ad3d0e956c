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


def _overrides(items) -> dict:
    """-S KEY=VALUE items -> {dotted key: YAML-parsed value}."""
    import yaml

    from .config import ParamsError

    out = {}
    for item in items:
        key, eq, value = item.partition("=")
        if not eq or not key:
            raise ParamsError(f"-S expects KEY=VALUE, got {item!r}")
        out[key.strip()] = yaml.safe_load(value)
    return out


def _unique_stems(paths) -> list[str]:
    """Output file stems: the image's stem, with _2, _3, ... for repeated names (a/x.jpg, b/x.jpg)."""
    from pathlib import Path

    used, out = set(), []
    for p in paths:
        base = Path(p).stem or "image"
        stem, n = base, 1
        while stem in used:
            n += 1
            stem = f"{base}_{n}"
        used.add(stem)
        out.append(stem)
    return out


def _count(text: str) -> int:
    """argparse type: an integer >= 0."""
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {value}")
    return value


def cmd_reconstruct(args) -> int:
    """Reconstruct faces in photos: parameters, landmarks, mesh and an overlay per image (ifn.reconstruct)."""
    from pathlib import Path

    from .reconstruct import CheckpointError, Reconstructor, box_for, read_boxes, write_outputs

    table = {}
    if args.boxes:
        try:
            table = read_boxes(args.boxes)
        except (OSError, ValueError) as err:
            print(f"ifn: error: face boxes: {err}", file=sys.stderr)
            return 2
    try:
        # torch.compile of the rasterizer costs ~9 s per process and pays off only on large batches: off here
        # unless asked for (-S render.compile=true).
        overrides = {"render.compile": False, **_overrides(args.set)}
        rec = Reconstructor.from_params(args.params, args.checkpoint, overrides, args.reflectance)
    except CheckpointError as err:
        print(f"ifn: error: {err}", file=sys.stderr)
        return 2
    out_dir = Path(args.out)
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        print(f"ifn: error: cannot create output folder {out_dir}: {err}", file=sys.stderr)
        return 2
    steps = rec.params.refine.steps if args.refine is None else args.refine   # bare --refine: params.yaml
    stems = _unique_stems(args.images)
    done = 0
    for start in range(0, len(args.images), rec.batch_size):   # write as we go
        chunk = args.images[start:start + rec.batch_size]
        results = rec(chunk, [box_for(table, p) for p in chunk], refine_steps=steps, reframe=args.reframe)
        for res, stem in zip(results, stems[start:start + rec.batch_size]):
            if not res.ok:
                print(f"ifn: skipping {res.source}: {res.error}", file=sys.stderr)
                continue
            paths = write_outputs(res, out_dir, stem, mesh_format=args.mesh_format)
            kinds = ", ".join(p.name for p in paths.values())
            print(f"{res.source} -> {out_dir}/ ({kinds}); photometric MAE {res.photometric_mae:.3f}"
                  + (f"; warning: {res.warning}" if res.warning else ""))
            done += 1
    if not done:
        print(f"ifn: error: none of the {len(args.images)} images could be processed", file=sys.stderr)
        return 1
    return 0


def add_reconstruct_parser(sub) -> None:
    p = sub.add_parser(
        "reconstruct", help=cmd_reconstruct.__doc__, description=cmd_reconstruct.__doc__ + """

Writes per image into --out: <stem>.json (named parameters, landmarks, crop affine, box, checkpoint, refine
steps, warning), <stem>.obj (or .ply) mesh with per-vertex albedo colours, <stem>_overlay.png and
<stem>_landmarks.txt (68 lines `x y`, pixels of the image file). Images that cannot be read are skipped with a
message. Exit status: 0 if at least one image was processed, 1 if none, 2 for usage, params or missing-data
errors.""", formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("images", nargs="+", metavar="IMAGE", help="photos (any format Pillow reads)")
    p.add_argument("--out", required=True, metavar="DIR", help="output folder (created if needed)")
    p.add_argument("--boxes", metavar="FILE",
                   help="face boxes x0 y0 x1 y1 in image pixels (3DDFA roi_box convention): a JSON object "
                        "{\"name\": [x0, y0, x1, y1]} or text/CSV lines `name x0 y0 x1 y1`; name = the path as "
                        "given or the file name. Images without a box are taken to be face crops.")
    p.add_argument("--checkpoint", metavar="PATH",
                   help="network model.pt (default: the pipeline's final network, else train.out_dir/<loss>)")
    p.add_argument("--refine", type=_count, nargs="?", const=None, default=0, metavar="N",
                   help="analysis-by-synthesis steps from the network estimate (default 0; bare --refine: "
                        "refine.steps of params.yaml)")
    p.add_argument("--reframe", type=_count, default=1, metavar="K",
                   help="re-framing passes for images without a box (default 1)")
    p.add_argument("--mesh-format", choices=("obj", "ply", "ply-ascii"), default="obj",
                   help="mesh file: obj (default), ply (binary) or ply-ascii")
    p.add_argument("--reflectance", default="models/face_model/reflectance.npz", metavar="PATH",
                   help="reflectance model of the pipeline (default: models/face_model/reflectance.npz)")
    p.add_argument("-S", "--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a params key, e.g. -S render.compile=false (value parsed as YAML)")
    p.set_defaults(func=cmd_reconstruct)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="ifn", description="InverseFaceNet re-created (see README.md)")
    parser.add_argument("--params", default="params.yaml", help="params file (default: params.yaml)")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("info", help=cmd_info.__doc__).set_defaults(func=cmd_info)
    add_reconstruct_parser(sub)
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

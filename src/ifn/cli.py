"""`ifn` command line: argument parsing only; the work is done by library functions."""
from __future__ import annotations

import argparse
import sys


def cmd_info(args) -> int:
    """Print the configured face model, parameter layout and renderer settings."""
    from .config import load_params
    from .model.loader import load_face_model
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


class CliError(Exception):
    """A command-level error: main prints `ifn: error: <message>` and returns `code` (2: usage, params, data)."""

    def __init__(self, message: str, code: int = 2):
        super().__init__(message)
        self.code = code


# -- shared by reconstruct, relight and edit ----------------------------------------------------------------------
def _box_table(args) -> dict:
    """The --boxes file as {name: box} ({} without one)."""
    from .apps.boxes import read_boxes

    if not args.boxes:
        return {}
    try:
        return read_boxes(args.boxes)
    except (OSError, ValueError) as err:
        raise CliError(f"face boxes: {err}") from None


def _reconstructor(args):
    """Reconstructor.from_params with the command's --checkpoint, --reflectance and -S overrides."""
    from .apps.export import OnnxUnavailable
    from .apps.reconstruct import CheckpointError, Reconstructor

    try:
        # torch.compile of the rasterizer costs ~9 s per process and pays off only on large batches: off here
        # unless asked for (-S render.compile=true).
        overrides = {"render.compile": False, **_overrides(args.set)}
        return Reconstructor.from_params(args.params, args.checkpoint, overrides, args.reflectance,
                                         detect=False if args.no_detect else None)
    except (CheckpointError, OnnxUnavailable) as err:   # OnnxUnavailable: an .onnx checkpoint without onnxruntime
        raise CliError(str(err)) from None


def _out_dir(args):
    from pathlib import Path

    out_dir = Path(args.out)
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise CliError(f"cannot create output folder {out_dir}: {err}") from None
    return out_dir


def _refine_steps(rec, args) -> int | None:
    """--refine N: N steps; bare --refine: refine.steps of params.yaml; absent: None (detected faces get the
    detector-guided refinement of params `detect`, the others none)."""
    if args.refine is None:
        return None
    return rec.params.refine.steps if args.refine == "params" else args.refine


def _reconstruct_one(rec, args, table, image):
    """One photo's Reconstruction, its largest face (with the command's box table, refinement and re-framing)."""
    from .apps.boxes import box_for

    return rec([image], [box_for(table, str(image))], refine_steps=_refine_steps(rec, args), reframe=args.reframe,
               largest=True, landmarks=not args.no_landmarks)[0]


def _for_each_photo(rec, args, table, handle) -> int:
    """Reconstruct args.images in batches and call handle(result, stem) -> one output line for each usable one
    (written as we go). Unusable photos (and photos whose handling raises BadImageError) are skipped with a
    message. Returns the exit status: 0 if at least one photo was handled, else 1."""
    from .real import BadImageError
    from .apps.boxes import box_for

    from tqdm import tqdm

    steps = _refine_steps(rec, args)
    stems = _unique_stems(args.images)
    done = 0
    progress = tqdm(total=len(args.images), unit="image", file=sys.stderr, disable=len(args.images) < 2 or None)
    for start in range(0, len(args.images), rec.batch_size):
        chunk = args.images[start:start + rec.batch_size]
        results = rec(chunk, [box_for(table, p) for p in chunk], refine_steps=steps, reframe=args.reframe,
                      largest=args.largest, landmarks=not args.no_landmarks)
        progress.update(len(chunk))
        faces = {}
        for res in results:
            faces[res.photo] = faces.get(res.photo, 0) + 1
        for res in results:
            stem = stems[start + res.photo]
            if faces[res.photo] > 1:   # several faces in one photo: <stem>_face0, <stem>_face1, ... (largest first)
                stem = f"{stem}_face{res.face}"
            if res.ok:
                try:
                    line = handle(res, stem)
                except BadImageError as err:   # e.g. the photo could not be read again at full resolution
                    res.error = err.reason
            if not res.ok:
                print(f"ifn: skipping {res.source}: {res.error}", file=sys.stderr)
                continue
            progress.write(line + (f"; warning: {res.warning}" if res.warning else ""), file=sys.stdout)
            done += 1
    progress.close()
    if not done:
        print(f"ifn: error: none of the {len(args.images)} images could be processed", file=sys.stderr)
        return 1
    return 0


def _add_photo_options(p, verb: str | None = None) -> None:
    """Arguments shared by reconstruct, relight and edit: photos, --out and how they are reconstructed."""
    p.add_argument("images", nargs="+", metavar="IMAGE", help="photos (any format Pillow reads)")
    p.add_argument("--out", required=True, metavar="DIR", help="output folder (created if needed)")
    p.add_argument("--boxes", metavar="FILE",
                   help="face boxes x0 y0 x1 y1 in image pixels (3DDFA roi_box convention): a JSON object "
                        "{\"name\": [x0, y0, x1, y1]} or text/CSV lines `name x0 y0 x1 y1`; name = the path as "
                        "given or the file name. Images without a box go to the face detector (all faces "
                        "found, largest first; none found: skipped with a message).")
    p.add_argument("--largest", action="store_true", help="only the largest detected face of each image")
    p.add_argument("--no-detect", action="store_true",
                   help="no face detector: images without a box are taken to be face crops (centred square, "
                        "then --reframe passes)")
    p.add_argument("--no-landmarks", action="store_true",
                   help="refine detected faces without their landmarks (photometric refinement only)")
    p.add_argument("--checkpoint", metavar="PATH",
                   help="network model.pt, or an .onnx file of `ifn export --onnx` (run with onnxruntime); "
                        "default: the pipeline's network fine-tuned on real photos, else its final detector-free "
                        "network, else train.out_dir/<loss>")
    p.add_argument("--refine", type=_count, nargs="?", const="params", default=None, metavar="N",
                   help="photometric analysis-by-synthesis steps from the network estimate"
                        + (f" before {verb}" if verb else "") + " (default: detected faces get the detector-guided "
                        "refinement of params `detect`, landmark-only then detect.steps photometric steps, other "
                        "faces none; bare --refine: refine.steps of params.yaml)")
    p.add_argument("--reframe", type=_count, default=1, metavar="K",
                   help="re-framing passes for images without a box when no detector is used (default 1)")
    p.add_argument("--reflectance", default="models/face_model/reflectance.npz", metavar="PATH",
                   help="reflectance model of the pipeline (default: models/face_model/reflectance.npz)")
    p.add_argument("-S", "--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a params key, e.g. -S render.compile=false (value parsed as YAML)")


# -- reconstruct --------------------------------------------------------------------------------------------------
def cmd_reconstruct(args) -> int:
    """Reconstruct faces in photos: parameters, landmarks, mesh and an overlay per image (ifn.reconstruct)."""
    from .apps.mesh_io import write_outputs

    table = _box_table(args)
    rec = _reconstructor(args)
    out_dir = _out_dir(args)

    def handle(res, stem):
        paths = write_outputs(res, out_dir, stem, mesh_format=args.mesh_format)
        kinds = ", ".join(p.name for p in paths.values())
        return f"{res.source} -> {out_dir}/ ({kinds}); photometric MAE {res.photometric_mae:.3f}"

    return _for_each_photo(rec, args, table, handle)


def add_reconstruct_parser(sub) -> None:
    p = sub.add_parser(
        "reconstruct", help=cmd_reconstruct.__doc__, description=cmd_reconstruct.__doc__ + """

Writes per image into --out: <stem>.json (named parameters, landmarks, crop affine, box, checkpoint, refine
steps, warning), <stem>.obj (or .ply) mesh with per-vertex albedo colours, <stem>_overlay.png and
<stem>_landmarks.txt (68 lines `x y`, pixels of the image file). Images that cannot be read are skipped with a
message. Exit status: 0 if at least one image was processed, 1 if none, 2 for usage, params or missing-data
errors.""", formatter_class=argparse.RawDescriptionHelpFormatter)
    _add_photo_options(p)
    p.add_argument("--mesh-format", choices=("obj", "ply", "ply-ascii"), default="obj",
                   help="mesh file: obj (default), ply (binary) or ply-ascii")
    p.set_defaults(func=cmd_reconstruct)


# -- relight and edit ---------------------------------------------------------------------------------------------
LIGHT_PRESETS = ("front", "left", "right", "top", "ambient")   # the names of ifn.apps.lights.PRESETS (checked by a test)


def _write_edit(res, edit, out_dir, stem: str, suffix: str) -> tuple:
    """Paste an EditResult of `res`'s crop back into the full-resolution photo and write <stem>_<suffix>.png
    (the photo) and <stem>_<suffix>_crop.png (crop before | after), atomically. Returns the two paths."""
    import numpy as np
    from PIL import Image

    from .atomic import atomic_path
    from .apps.paste_back import paste_back
    from .real import BadImageError, load_image

    photo = load_image(res.source, max_side=max(res.image_size))   # the file's own pixel grid (EXIF-upright)
    if photo.shape[:2] != tuple(res.image_size):
        raise BadImageError(res.source, f"the photo is now {photo.shape[1]}x{photo.shape[0]} px, was "
                                         f"{res.image_size[1]}x{res.image_size[0]} when reconstructed")
    full = paste_back(photo, edit.edited, res.crop, res.affine, mode=edit.mode)
    paths = (out_dir / f"{stem}_{suffix}.png", out_dir / f"{stem}_{suffix}_crop.png")
    for path, image in zip(paths, (full, np.concatenate([res.crop, edit.edited], axis=1))):
        with atomic_path(path) as tmp:
            Image.fromarray(image).save(tmp, format="PNG")
    return paths


def _strength(text: str) -> float:
    """argparse type: a finite float >= 0."""
    import math

    value = float(text)
    if not (math.isfinite(value) and value >= 0):
        raise argparse.ArgumentTypeError(f"must be a finite number >= 0, got {text}")
    return value


def _light_from(rec, args, table):
    """(9, 3) SH light of --light-from: params.illumination of a JSON written by `ifn reconstruct`, or the light
    estimated from a photo."""
    import json
    from pathlib import Path

    import numpy as np

    src = Path(args.light_from)
    what = f"--light-from {src}"
    if src.suffix.lower() == ".json":
        try:
            data = json.loads(src.read_text())
            light = np.asarray(data["params"]["illumination"], dtype=np.float64)
        except OSError as err:
            raise CliError(f"{what}: cannot read: {err.strerror or err}") from None
        except json.JSONDecodeError as err:
            raise CliError(f"{what}: invalid JSON ({err})") from None
        except (KeyError, TypeError, ValueError):
            raise CliError(f"{what}: no params.illumination (not a JSON of `ifn reconstruct`, or a failed "
                           f"reconstruction)") from None
        if light.shape != (9, 3) or not np.isfinite(light).all():
            raise CliError(f"{what}: params.illumination must be 9 x 3 finite numbers, got shape {light.shape}")
        return light
    res = _reconstruct_one(rec, args, table, src)
    if not res.ok:
        raise CliError(f"{what}: {res.error}")
    if res.warning:
        print(f"ifn: warning: {what}: {res.warning}", file=sys.stderr)
    return np.asarray(res.params["illumination"], dtype=np.float64)


def cmd_relight(args) -> int:
    """Relight faces in photos: replace the estimated light by a preset or another photo's light (ifn.apps.edit)."""
    import torch

    from .apps.edit import relight
    from .apps.lights import preset_light

    table = _box_table(args)
    rec = _reconstructor(args)
    if args.light is not None:
        light = preset_light(args.light, args.strength)
        desc = f"light {args.light}" + (f" x{args.strength:g}" if args.strength != 1 else "")
    else:
        light = args.strength * torch.as_tensor(_light_from(rec, args, table), dtype=torch.float32)
        desc = f"light of {args.light_from}" + (f" x{args.strength:g}" if args.strength != 1 else "")
    out_dir = _out_dir(args)

    def handle(res, stem):
        edit = relight(rec.renderer, res.vector, res.crop, light, keep_exposure=args.keep_exposure)
        paths = _write_edit(res, edit, out_dir, stem, "relit")
        return f"{res.source} -> {out_dir}/ ({', '.join(p.name for p in paths)}); {desc}"

    return _for_each_photo(rec, args, table, handle)


def add_relight_parser(sub) -> None:
    p = sub.add_parser(
        "relight", help=cmd_relight.__doc__, description=cmd_relight.__doc__ + """

Each photo is reconstructed as by `ifn reconstruct` (same options), its spherical-harmonics light is replaced
and the change is transferred into the crop with the ratio image (ifn.apps.edit.relight) and from there into the
full-resolution photo (ifn.apps.paste_back); pixels away from the face stay bit-for-bit. Writes per image into
--out: <stem>_relit.png (the whole photo, its original size) and <stem>_relit_crop.png (the crop before |
after). Lights are in camera space: a light taken from another photo keeps its direction relative to the camera.
Images that cannot be read are skipped with a message. Exit status: 0 if at least one image was processed, 1 if
none, 2 for usage, params or missing-data errors.""", formatter_class=argparse.RawDescriptionHelpFormatter)
    _add_photo_options(p, "relighting")
    light = p.add_mutually_exclusive_group(required=True)
    light.add_argument("--light", choices=LIGHT_PRESETS, metavar="PRESET",
                       help="a white preset light: " + ", ".join(LIGHT_PRESETS)
                            + " (front/left/right/top: directional + ambient; ambient: uniform)")
    light.add_argument("--light-from", metavar="IMAGE_OR_JSON",
                       help="the light estimated from another photo (reconstructed with the same options), or "
                            "params.illumination of a <stem>.json written by `ifn reconstruct`")
    p.add_argument("--strength", type=_strength, default=1.0, metavar="S",
                   help="radiance multiplier of the new light (default 1)")
    p.add_argument("--keep-exposure", action="store_true",
                   help="scale the new light per colour channel so the face keeps its mean brightness and colour: "
                        "only the light's direction changes (--strength then has no effect)")
    p.set_defaults(func=cmd_relight)


def _index_value(text: str) -> tuple:
    """argparse type: `KEY=VALUE` -> (key, float value); key an int if it is one, else a name."""
    import math

    key, eq, value = text.partition("=")
    key = key.strip()
    try:
        number = float(value)
    except ValueError:
        number = math.nan
    if not eq or not key or not math.isfinite(number):
        raise argparse.ArgumentTypeError(f"expected INDEX=VALUE (or NAME=VALUE) with a finite number, got {text!r}")
    try:
        return int(key), number
    except ValueError:
        return key, number


def _edit_values(items, size: int, what: str, names=(), lo=None, hi=None) -> dict:
    """[(index or name, value)] -> {index: value} (a repeated key: the last value), checked against `size`
    components, `names` and the value range [lo, hi]."""
    import difflib

    out = {}
    for key, value in items:
        if isinstance(key, str):
            if key not in names:
                close = difflib.get_close_matches(key, names, n=3)
                hint = f"did you mean {', '.join(close)}? " if close else ""
                shown = ", ".join(names[:8]) + (f", ... ({len(names)} in all)" if len(names) > 8 else "")
                raise CliError(f"unknown {what} name {key!r}: {hint}valid names: {shown or '(none)'}; or give "
                               f"an index 0..{size - 1}")
            key = list(names).index(key)
        if not 0 <= key < size:
            raise CliError(f"{what} index {key} outside 0..{size - 1}")
        if (lo is not None and value < lo) or (hi is not None and value > hi):
            raise CliError(f"{what} {key}={value:g} outside [{lo:g}, {hi:g}]")
        out[key] = value
    return out


def cmd_edit(args) -> int:
    """Edit the appearance of faces in photos: skin reflectance and expression (ifn.apps.edit.edit_appearance)."""
    import numpy as np

    from .apps.edit import edit_appearance

    if not (args.albedo or args.albedo_delta or args.expression or args.expression_delta):
        raise CliError("ifn edit: give at least one edit (--albedo, --albedo-delta, --expression, "
                       "--expression-delta)")
    table = _box_table(args)
    rec = _reconstructor(args)
    sizes = rec.renderer.layout.sizes
    names = tuple(rec.renderer.face_model.expression_names)
    n_refl, n_expr = sizes["reflectance"], sizes["expression"]
    albedo = _edit_values(args.albedo, n_refl, "albedo component")
    albedo_delta = _edit_values(args.albedo_delta, n_refl, "albedo component")
    expr = _edit_values(args.expression, n_expr, "expression", names, 0.0, 1.0)
    expr_delta = _edit_values(args.expression_delta, n_expr, "expression", names, -1.0, 1.0)
    out_dir = _out_dir(args)

    def handle(res, stem):
        # expressions: set, then add, then clamp to the blendshape range [0, 1]
        weights = np.asarray(res.params["expression"], dtype=np.float64)
        expression = {k: float(np.clip(expr.get(k, weights[k]) + expr_delta.get(k, 0.0), 0.0, 1.0))
                      for k in {*expr, *expr_delta}}
        edit = edit_appearance(rec.renderer, res.vector, res.crop, reflectance=albedo or None,
                               reflectance_delta=albedo_delta or None, expression=expression or None)
        paths = _write_edit(res, edit, out_dir, stem, "edited")
        return f"{res.source} -> {out_dir}/ ({', '.join(p.name for p in paths)})"

    return _for_each_photo(rec, args, table, handle)


def add_edit_parser(sub) -> None:
    p = sub.add_parser(
        "edit", help=cmd_edit.__doc__, description=cmd_edit.__doc__ + """

Each photo is reconstructed as by `ifn reconstruct` (same options), the edited parameters are re-rendered and
the change is transferred into the crop by difference, keeping the photo's detail (moved with the surface for
expression edits), and from there into the full-resolution photo (ifn.apps.paste_back). Writes per image into
--out: <stem>_edited.png (the whole photo, its original size) and <stem>_edited_crop.png (the crop before |
after). Each edit option may be repeated; a repeated component: the last value counts; values given by --albedo
/ --expression are set first, then the deltas are added; expression weights end up clamped to [0, 1]. At least
one edit is required. Images that cannot be read are skipped with a message. Exit status: 0 if at least one
image was processed, 1 if none, 2 for usage, params or missing-data errors.""",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    _add_photo_options(p, "editing")
    p.add_argument("--albedo", type=_index_value, action="append", default=[], metavar="I=V",
                   help="set skin reflectance PCA component I (0 = the largest) to V prior standard deviations")
    p.add_argument("--albedo-delta", type=_index_value, action="append", default=[], metavar="I=V",
                   help="add V prior standard deviations to reflectance component I")
    p.add_argument("--expression", type=_index_value, action="append", default=[], metavar="NAME=V",
                   help="set an expression blendshape (name, e.g. jawOpen or mouthSmile_L, or index) to weight "
                        "V in [0, 1]")
    p.add_argument("--expression-delta", type=_index_value, action="append", default=[], metavar="NAME=V",
                   help="add V in [-1, 1] to an expression blendshape weight (name or index)")
    p.set_defaults(func=cmd_edit)


# -- export -------------------------------------------------------------------------------------------------------
def cmd_export(args) -> int:
    """Export the network to ONNX (ifn.apps.export), checked against PyTorch on random crops."""
    from .config import load_params
    from .apps.export import OnnxUnavailable, export_onnx
    from .apps.checkpoint import CheckpointError, _user_path, default_checkpoint, load_checkpoint

    try:
        params = load_params(_user_path(args.params), _overrides(args.set))
        path = _user_path(args.checkpoint) if args.checkpoint else default_checkpoint(params)
        report = export_onnx(load_checkpoint(path), args.onnx)
    except (CheckpointError, OnnxUnavailable, ValueError) as err:
        raise CliError(str(err)) from None
    print(f"{path} -> {report['path']} (opset {report['opset']}, input images (N, 3, {report['image_size']}, "
          f"{report['image_size']}), output params (N, {report['outputs']}); onnxruntime vs PyTorch max |diff| "
          f"{report['max_abs_diff']:.2g})")
    return 0


def add_export_parser(sub) -> None:
    p = sub.add_parser("export", help=cmd_export.__doc__, description=cmd_export.__doc__ + """

The graph takes `images` (N, 3, S, S) float32 sRGB in [0, 1] at the network's crop size S and returns `params`
(N, P) in the parameter layout's order; N is dynamic; the model.pt's info is stored as metadata `ifn` (JSON).
`ifn reconstruct --checkpoint net.onnx ...` then runs it with onnxruntime.""",
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--onnx", required=True, metavar="PATH", help="the .onnx file to write (atomically)")
    p.add_argument("--checkpoint", metavar="PATH", help="model.pt (default: as for `ifn reconstruct`)")
    p.add_argument("-S", "--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a params key (value parsed as YAML)")
    p.set_defaults(func=cmd_export)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="ifn", description="InverseFaceNet re-created (see README.md)")
    parser.add_argument("--params", default="params.yaml", help="params file (default: params.yaml)")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("info", help=cmd_info.__doc__).set_defaults(func=cmd_info)
    add_reconstruct_parser(sub)
    add_relight_parser(sub)
    add_edit_parser(sub)
    add_export_parser(sub)
    args = parser.parse_args(argv)
    from .config import ParamsError
    from .paths import DataMissingError

    try:
        return args.func(args)
    except (ParamsError, DataMissingError) as err:
        print(f"ifn: error: {err}", file=sys.stderr)
        return 2
    except CliError as err:
        print(f"ifn: error: {err}", file=sys.stderr)
        return err.code


if __name__ == "__main__":
    sys.exit(main())

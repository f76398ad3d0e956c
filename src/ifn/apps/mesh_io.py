"""Writers of a reconstruction (`ifn reconstruct` outputs): OBJ / PLY meshes with per-vertex albedo, the overlay
panel, and `write_outputs` (JSON summary, mesh, landmarks, overlay), every file written atomically.

    from ifn.apps.mesh_io import write_outputs
    write_outputs(result, "out/", "photo")     # result: an ifn.apps.result.Reconstruction
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from ..real import BadImageError, apply_affine, load_image

if TYPE_CHECKING:   # the writers only read a Reconstruction's fields
    from .result import Reconstruction


def _srgb_bytes(albedo: np.ndarray) -> np.ndarray:
    """(V, 3) linear albedo -> (V, 3) uint8 sRGB."""
    from ..render.color import linear_to_srgb

    s = linear_to_srgb(torch.as_tensor(np.asarray(albedo, dtype=np.float32))).numpy()
    return np.clip(np.round(s * 255), 0, 255).astype(np.uint8)


MESH_HEADER = ("camera space, centimetres (+x right, +y up, +z towards the viewer; camera at the origin "
               "looking down -z)")


def write_obj(path, vertices: np.ndarray, triangles: np.ndarray, albedo: np.ndarray, comment: str = "") -> Path:
    """Wavefront OBJ with per-vertex colours (`v x y z r g b`, the albedo in sRGB [0, 1]) and 1-based faces,
    written atomically."""
    from ..atomic import atomic_path

    v = np.asarray(vertices, dtype=np.float64)
    c = _srgb_bytes(albedo) / 255.0
    f = np.asarray(triangles, dtype=np.int64) + 1
    lines = [f"# {line}" for line in comment.splitlines() if line]
    lines += [f"# {MESH_HEADER}",
              "# vertex colours: per-vertex albedo (no shading), sRGB in [0, 1] (linear albedo through the sRGB curve)",
              f"# {len(v)} vertices, {len(f)} triangles"]
    body = "\n".join(lines) + "\n"
    body += "".join(f"v {x:.5f} {y:.5f} {z:.5f} {r:.4f} {g:.4f} {b:.4f}\n"
                    for (x, y, z), (r, g, b) in zip(v.tolist(), c.tolist()))
    body += "".join(f"f {a} {b} {d}\n" for a, b, d in f.tolist())
    with atomic_path(path) as tmp:
        tmp.write_text(body)
    return Path(path)


def write_ply(path, vertices: np.ndarray, triangles: np.ndarray, albedo: np.ndarray, binary: bool = True,
              comment: str = "") -> Path:
    """PLY (binary little-endian or ascii): float x y z, uchar red green blue (albedo in sRGB), faces as
    uchar-counted int lists; written atomically."""
    from ..atomic import atomic_path

    v = np.asarray(vertices, dtype=np.float32)
    c = _srgb_bytes(albedo)
    f = np.asarray(triangles, dtype=np.int32)
    fmt = "binary_little_endian" if binary else "ascii"
    comments = [line for line in comment.splitlines() if line] + [
        MESH_HEADER, "vertex colours: per-vertex albedo (no shading), sRGB"]
    header = (f"ply\nformat {fmt} 1.0\n" + "".join(f"comment {line}\n" for line in comments)
              + f"element vertex {len(v)}\nproperty float x\nproperty float y\nproperty float z\n"
              "property uchar red\nproperty uchar green\nproperty uchar blue\n"
              f"element face {len(f)}\nproperty list uchar int vertex_indices\nend_header\n")
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as fh:
            fh.write(header.encode("ascii"))
            if binary:
                vert = np.empty(len(v), dtype=[("p", "<f4", 3), ("c", "u1", 3)])
                vert["p"], vert["c"] = v, c
                fh.write(vert.tobytes())
                face = np.empty(len(f), dtype=[("n", "u1"), ("i", "<i4", 3)])
                face["n"], face["i"] = 3, f
                fh.write(face.tobytes())
            else:
                fh.write("".join(f"{x:.5f} {y:.5f} {z:.5f} {r} {g} {b}\n" for (x, y, z), (r, g, b)
                                 in zip(v.tolist(), c.tolist())).encode("ascii"))
                fh.write("".join(f"3 {a} {b} {d}\n" for a, b, d in f.tolist()).encode("ascii"))
    return Path(path)


def overlay_image(result: Reconstruction, photo: np.ndarray, max_side: int = 1024) -> np.ndarray:
    """(H', W', 3) uint8 panel: [photo with the re-render composited inside the face mask, landmarks drawn |
    crop over re-render]. `photo` is the image on the file's grid or the loaded (possibly downscaled) one:
    the result's affine is rescaled to it. The photo side is reduced to at most `max_side`."""
    from PIL import Image, ImageDraw

    photo = np.asarray(photo)
    h, w = photo.shape[:2]
    k = min(1.0, max_side / max(h, w))
    grid = (w / result.image_size[1] * k, h / result.image_size[0] * k)   # output px per file px (x, y)
    out_w, out_h = max(1, round(w * k)), max(1, round(h * k))
    base = Image.fromarray(photo).resize((out_w, out_h), Image.BICUBIC) if k < 1 else Image.fromarray(photo)
    # crop px -> output px, and its inverse for PIL (output px -> crop px)
    a = result.affine * np.array([[grid[0]], [grid[1]]])
    inv = np.linalg.inv(np.vstack([a, [0, 0, 1]]))[:2]
    s = result.render.shape[0]
    render = Image.fromarray(result.render).transform((out_w, out_h), Image.AFFINE, tuple(inv.reshape(-1)),
                                                      Image.BILINEAR)
    alpha = Image.fromarray((result.mask * 255).astype(np.uint8)).transform(
        (out_w, out_h), Image.AFFINE, tuple(inv.reshape(-1)), Image.BILINEAR)
    base = Image.composite(render, base.convert("RGB"), alpha)
    draw = ImageDraw.Draw(base)
    rad = max(1.5, 0.006 * max(out_w, out_h))
    for x, y in apply_affine(a, result.landmarks_crop):
        if math.isfinite(x) and math.isfinite(y):
            draw.ellipse([x - rad, y - rad, x + rad, y + rad], fill=(40, 255, 80))
    # right column: the crop (what the network saw) above the re-render, with crop-pixel landmarks
    side = max(out_h // 2, 1)
    col = Image.new("RGB", (side, 2 * side), (0, 0, 0))
    col.paste(Image.fromarray(result.crop).resize((side, side), Image.BICUBIC), (0, 0))
    rr = Image.fromarray(result.render).resize((side, side), Image.BICUBIC)
    d2 = ImageDraw.Draw(rr)
    r2 = max(1.0, side / 150)
    for x, y in result.landmarks_crop * (side / s):
        if math.isfinite(x) and math.isfinite(y):
            d2.ellipse([x - r2, y - r2, x + r2, y + r2], fill=(40, 255, 80))
    col.paste(rr, (0, side))
    panel = Image.new("RGB", (out_w + side, max(out_h, 2 * side)), (0, 0, 0))
    panel.paste(base, (0, 0))
    panel.paste(col, (out_w, 0))
    return np.asarray(panel)


def write_outputs(result: Reconstruction, out_dir, stem: str, photo: np.ndarray | None = None,
                  mesh_format: str = "obj") -> dict[str, Path]:
    """Write `<stem>.json`, `<stem>.obj` (or .ply), `<stem>_overlay.png`, `<stem>_landmarks.txt` into out_dir
    (atomically). mesh_format: obj | ply (binary) | ply-ascii. Returns {kind: path}."""
    from PIL import Image

    from ..atomic import atomic_path, save_json

    out_dir = Path(out_dir)
    comment = f"ifn reconstruct {result.source}"
    paths = {"json": save_json(out_dir / f"{stem}.json", result.summary())}
    if mesh_format == "obj":
        paths["mesh"] = write_obj(out_dir / f"{stem}.obj", result.vertices, result.triangles, result.albedo, comment)
    elif mesh_format in ("ply", "ply-ascii"):
        paths["mesh"] = write_ply(out_dir / f"{stem}.ply", result.vertices, result.triangles, result.albedo,
                                  binary=mesh_format == "ply", comment=comment)
    else:
        raise ValueError(f"mesh_format {mesh_format!r}: one of obj, ply, ply-ascii")
    with atomic_path(out_dir / f"{stem}_landmarks.txt") as tmp:
        tmp.write_text("".join(f"{x:.3f} {y:.3f}\n" for x, y in result.landmarks.tolist()))
    paths["landmarks"] = out_dir / f"{stem}_landmarks.txt"
    if photo is None and Path(result.source).is_file():
        try:
            photo = load_image(result.source)
        except BadImageError:
            photo = None
    panel = overlay_image(result, photo) if photo is not None else overlay_image(_crop_only(result), result.crop)
    with atomic_path(out_dir / f"{stem}_overlay.png") as tmp:
        Image.fromarray(panel).save(tmp, format="PNG")
    paths["overlay"] = out_dir / f"{stem}_overlay.png"
    return paths


def _crop_only(result: Reconstruction) -> Reconstruction:
    """The result re-expressed on its own crop (for the overlay when the photo is not at hand)."""
    import dataclasses

    s = result.crop.shape[0]
    return dataclasses.replace(result, affine=np.array([[1.0, 0, 0], [0, 1.0, 0]]), image_size=(s, s))

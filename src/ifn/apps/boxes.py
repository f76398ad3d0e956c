"""Face-box files for `ifn reconstruct --boxes`: JSON {name: [x0, y0, x1, y1]} or `name x0 y0 x1 y1` lines."""
from __future__ import annotations

from pathlib import Path
from typing import Mapping, Sequence


def read_boxes(path) -> dict[str, tuple[float, float, float, float]]:
    """Face boxes from a file: JSON {"name or path": [x0, y0, x1, y1], ...}, or text/CSV lines
    `name x0 y0 x1 y1` (spaces or commas; `#` comments, blank lines and a header line are skipped).
    Raises ValueError naming the file and line for anything else."""
    import json

    path = Path(path)
    text = path.read_text()
    if text.lstrip().startswith("{"):
        try:
            raw = json.loads(text)
        except json.JSONDecodeError as e:
            raise ValueError(f"{path}: invalid JSON ({e})") from None
        out = {}
        for name, box in raw.items():
            try:
                vals = tuple(float(v) for v in box)
            except (TypeError, ValueError):
                vals = ()
            if len(vals) != 4:
                raise ValueError(f"{path}: box of {name!r} must be [x0, y0, x1, y1], got {box!r}")
            out[str(name)] = vals
        return out
    out, seen_data = {}, False
    for n, line in enumerate(text.splitlines(), 1):
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        first, seen_data = not seen_data, True
        parts = line.replace(",", " ").replace(";", " ").rsplit(None, 4)
        try:
            if len(parts) != 5:
                raise ValueError
            out[parts[0].strip().strip('"')] = tuple(float(v) for v in parts[1:])
        except ValueError:
            if first:
                continue   # a header line such as `name,x0,y0,x1,y1`
            raise ValueError(f"{path}:{n}: expected `name x0 y0 x1 y1`, got {line!r}") from None
    return out


def box_for(boxes: Mapping[str, Sequence[float]], image: str):
    """The box of `image` (a path as given): by the path as given, else by its file name; None if absent."""
    if image in boxes:
        return boxes[image]
    return boxes.get(Path(image).name)

"""Regenerate the golden images after a deliberate change of the renderer: python tests/golden/make_golden.py

Review the new image before committing it: the golden test exists to catch unintended changes.
"""
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from test_render import sphere_render  # noqa: E402

out, *_ = sphere_render(size=32, subdivisions=3)
np.save(Path(__file__).parent / "sphere32.npy", out.image[0].float().numpy())
print("wrote", Path(__file__).parent / "sphere32.npy")

"""The AFLW2000-3D dev images the bench scripts tune on: never the ones stage evaluate_real reports."""
from __future__ import annotations

import numpy as np

from ifn.evaluate_real import benchmark_subset
from ifn.nme import load_aflw2000_dev, yaw_bins
from ifn.paths import resolve


def tuning_indices(params, per_bin: int) -> list[int]:
    """The last `per_bin` images of each yaw bin (file order) that are not in evaluate_real's subset
    (benchmark_subset(yaw, evaluate_real.benchmark_images)); a bin with fewer such images gives all it has
    (with 120 reported images, the [60, 90] bin of the dev part, 52 images, has 12 left)."""
    yaw = load_aflw2000_dev(resolve(params.evaluate_real.benchmark))["yaw_deg"]
    reported = set(benchmark_subset(yaw, params.evaluate_real.benchmark_images).tolist())
    bins = yaw_bins(yaw)
    out: list[int] = []
    for b in range(3):
        free = [int(i) for i in np.flatnonzero(bins == b) if int(i) not in reported]
        out += free[-per_bin:] if per_bin > 0 else []
    return sorted(out)

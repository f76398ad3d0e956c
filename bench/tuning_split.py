"""The AFLW2000-3D dev images the bench scripts tune on: never the ones stage evaluate_real reports."""
from __future__ import annotations

from ifn.evaluate_real import reported_indices
from ifn.evaluate_real import tuning_indices as tuning_set
from ifn.nme import load_aflw2000_dev, yaw_bins
from ifn.paths import resolve


def tuning_indices(params, per_bin: int) -> list[int]:
    """The last `per_bin` tuning images of each yaw bin (file order): ifn.evaluate_real.tuning_indices, every
    `evaluate_real.tuning_every`-th image of a bin (68 / 19 / 13 of the 400 dev images with 4); a bin with fewer
    gives all it has. Checked: none of them is in evaluate_real's reported set."""
    yaw = load_aflw2000_dev(resolve(params.evaluate_real.benchmark))["yaw_deg"]
    tune = tuning_set(yaw, params.evaluate_real.tuning_every)
    reported = set(reported_indices(yaw, params.evaluate_real.benchmark_images,
                                    params.evaluate_real.tuning_every).tolist())
    assert not reported & set(tune.tolist()), "tuning and reported AFLW2000-3D images overlap"
    bins = yaw_bins(yaw)
    out: list[int] = []
    for b in range(3):
        members = [int(i) for i in tune if bins[i] == b]
        out += members[-per_bin:] if per_bin > 0 else []
    return sorted(out)

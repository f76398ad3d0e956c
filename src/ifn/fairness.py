"""Fairness check: the final network's photometric error on held-out UTKFace photos, per age, gender and race.

UTKFace file names encode the subject's age, gender and race (ifn.real.utk_attributes). Every held-out
UTKFace photo (never used for bootstrapping) is reconstructed by the network alone (no refinement: cheap, so
all of them) and the masked photometric error of its re-render (ifn.evaluate.photo_errors) is grouped by
attribute (ifn.figures_paper.fairness_table). A group with a clearly higher error is one the synthetic
corpus and the reflectance model represent worse (e.g. skin tones the albedo model does not span).
"""
from __future__ import annotations

import numpy as np
import torch

from .config import Params
from .real import BadImageError, RealPhotos


def utk_photometric(params: Params, renderer, net, batch_size: int = 64, limit: int = 0, log=print
                    ) -> tuple[np.ndarray, np.ndarray]:
    """(photometric MAE (N,), file names (N,)) of the network's estimates on the held-out UTKFace photos
    (the first `limit` by name if limit > 0). Unusable files are skipped with a message."""
    from .evaluate import photo_errors, predict

    size = params.real.working_size(params.render.image_size)
    photos = RealPhotos(params.real.root, ["utkface"], "heldout", size, params.real.heldout_fraction,
                        max_per_source=limit or None, max_side=params.real.max_side)
    errors, names = [], []
    for start in range(0, len(photos), batch_size):
        crops, kept = [], []
        for i in range(start, min(start + batch_size, len(photos))):
            try:
                crops.append(photos.load(i)[0])
                kept.append(photos.items[i][1])
            except BadImageError as e:
                log(f"skipping UTKFace photo {photos.items[i][1]}: {e.reason}")
        if not crops:
            continue
        crops = np.stack(crops)
        est = predict(net, crops, batch_size)
        images = torch.from_numpy(crops).float() / 255
        errors.append(photo_errors(renderer, est, images, batch_size)["photometric_mae"].numpy())
        names += kept
    return (np.concatenate(errors) if errors else np.zeros(0)), np.array(names)

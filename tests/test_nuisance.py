"""Appearance nuisances of the synthetic corpus (ifn.nuisance): eyebrows on the mesh, long hair in the image."""
from __future__ import annotations

import math

import torch

from ifn.nuisance import BROW_HALF_WIDTH_CM, brow_field, face_pixels, long_hair, paint_brows


def test_brow_field_follows_the_brow_landmarks(face_model_full):
    """Distance 0 lies on the brow line (the landmarks lowered by BROW_OFFSET_CM); off the front of the face the
    field is infinite; the medial landmark is at the start of its brow, the lateral one at its end."""
    from ifn.nuisance import BROW_OFFSET_CM

    fm = face_model_full
    dist, along = brow_field(fm)
    lm = fm.landmarks
    assert torch.isinf(dist[~fm.part_mask("face")]).all()
    for medial, lateral in ((21, 17), (22, 26)):
        assert along[lm[medial]] < 0.05 and along[lm[lateral]] > 0.95
    # the landmark vertices sit BROW_OFFSET_CM above the line (within the mesh's resolution)
    d = dist[lm[17:27]]
    assert (d - BROW_OFFSET_CM).abs().max() < 0.15, d


def test_paint_brows_only_near_the_brows(face_model_full):
    """prob 0 changes nothing; prob 1 changes every sample; nothing changes farther from the brow line than the
    widest band + its soft edge; the eyes, nose and mouth keep their albedo; seeded: the same brows twice."""
    fm = face_model_full
    albedo = torch.full((5, fm.n_vertices, 3), 0.5)
    field = brow_field(fm)
    assert torch.equal(paint_brows(fm, albedo, 0.0, torch.Generator().manual_seed(0), field), albedo)
    a = paint_brows(fm, albedo, 1.0, torch.Generator().manual_seed(0), field)
    b = paint_brows(fm, albedo, 1.0, torch.Generator().manual_seed(0))
    assert torch.equal(a, b) and a.min() >= 0 and a.max() <= 1
    changed = ((a - albedo).abs() > 1e-3).any(-1)                       # (5, V)
    assert changed.any(1).all()
    far = field[0] > BROW_HALF_WIDTH_CM[1] + 0.6                       # sigmoid((half - d) / 0.1) < 2.5e-3 there
    assert not changed[:, far].any()
    lm = fm.landmarks
    for k in list(range(36, 48)) + [30, 33] + list(range(48, 68)):    # eyes, nose tip, mouth
        assert not changed[:, lm[k]].any()
    # the brows get darker (every brow colour is darker than this grey)
    assert (a[:, lm[19]].sum(-1) < albedo[:, lm[19]].sum(-1)).all()


def _scene(renderer, n: int = 4, yaw_deg: float = 0.0):
    groups = renderer.layout.zeros(n)
    groups["illumination"][:, 0, :] = math.sqrt(4 * math.pi)
    groups["rotation"][:, 0] = math.radians(yaw_deg)
    return groups, renderer(groups, background=0.2)


def test_long_hair_never_covers_the_face_below_its_hairline(constant_albedo_renderer):
    """Hair is composited only outside the face pixels below the hairline (minus their outer rim of at most
    HAIR_COVER face heights): the eyes, nose and mouth landmarks' pixels keep their colour; the mask gains the
    hair; prob 0 is the identity; seeded."""
    from ifn.nuisance import HAIR_COVER

    renderer = constant_albedo_renderer(64)
    for yaw in (0.0, 50.0):
        groups, out = _scene(renderer, 6, yaw)
        face = face_pixels(renderer, out.fragments)
        assert face.any() and (face <= out.mask).all()
        image, mask = long_hair(out.image, out.mask, face, out.landmarks, 0.0, torch.Generator().manual_seed(0))
        assert torch.equal(image, out.image) and torch.equal(mask, out.mask)
        image, mask = long_hair(out.image, out.mask, face, out.landmarks, 1.0, torch.Generator().manual_seed(0))
        again, _ = long_hair(out.image, out.mask, face, out.landmarks, 1.0, torch.Generator().manual_seed(0))
        assert torch.equal(image, again)
        changed = (image - out.image).abs().amax(-1) > 1e-6
        assert (changed <= mask).all()                                        # hair is in the mask
        assert (mask >= out.mask).all() and (mask & ~out.mask).any()          # hair outside the head
        lm = out.landmarks.round().long()
        for k in (30, 33, 36, 45, 51, 57, 62, 66):                             # eyes, nose, mouth: visible
            for i in range(6):
                x, y = lm[i, k].tolist()
                if face[i, y, x]:
                    assert not changed[i, y, x], (yaw, i, k)
        # the face pixels deeper inside than the widest rim and below the lowest hairline (the brows) are kept
        from scipy.ndimage import distance_transform_edt
        for i in range(6):
            face_h = float((out.landmarks[i, 8] - (out.landmarks[i, 19] + out.landmarks[i, 24]) / 2).norm())
            inner = torch.from_numpy(distance_transform_edt(face[i].numpy()) > HAIR_COVER * face_h + 1)
            below_brows = torch.arange(64)[:, None] > out.landmarks[i, 17:27, 1].min()
            assert not (changed[i] & inner & below_brows).any()

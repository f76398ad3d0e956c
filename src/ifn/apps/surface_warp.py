"""Geometry edits as an image warp: where each pixel of the edited face was in the photo.

When an edit moves the geometry (an expression), the photo's own content should move with the surface: the
lips of the photo become the smiling lips, a mole stays on the cheek. `surface_flow` finds, for every pixel of
the new render's face, where the same surface point (same triangle, same barycentrics) projected in the old
render, if it was visible there; `extend_flow` makes that a smooth displacement field over the whole image that
fades to exactly zero a few pixels beyond the face; `warp_image` resamples the photo through it.

Nothing of the render is painted into the photo: where the fit is a few pixels off the photo's features (lips,
nostrils), the photo's features still move with the model's (smooth) motion, and no second mouth or nose
appears. The shading change of the moved surface is a separate per-vertex factor (ifn.apps.edit).
"""
from __future__ import annotations

import torch

from ..render.renderer import FaceRender, Renderer
from .composite import tent_blur

DEPTH_TOL_CM = 1.0   # an old pixel shows the same surface point if its depth agrees this well
FLOW_PX = 6          # extend_flow: radius (px) of the fill into newly visible pixels and of the fade outside


@torch.no_grad()
def surface_flow(renderer: Renderer, old: FaceRender, new: FaceRender, old_mask: torch.Tensor,
                 new_mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per new-face pixel, the displacement to where its surface point was in the old render.

    old, new   renders of the same mesh (same triangles) with different geometry, (B, S, S) images
    old_mask, new_mask  (B, S, S) bool face pixels of each

    Returns (flow (B, S, S, 2) float64 px (du, dv): pixel centre + flow = the point's old image position;
    valid (B, S, S) bool: on new_mask, inside the image and visible in the old render there -- the old depth
    at the nearest old pixel agrees within DEPTH_TOL_CM and that pixel is on old_mask). Flow is 0 where not valid.
    """
    b, h, w = new_mask.shape
    src = new.fragments.interpolate(old.vertices.detach()).reshape(b, h * w, 3)
    xy, z = renderer.camera.project(src)
    xy, z = xy.cpu().double().reshape(b, h, w, 2), z.cpu().double().reshape(b, h, w)
    jj, ii = torch.meshgrid(torch.arange(w, dtype=torch.float64) + 0.5, torch.arange(h, dtype=torch.float64) + 0.5,
                            indexing="xy")
    flow = xy - torch.stack([jj, ii], -1)[None]
    col, row = torch.floor(xy[..., 0]).long(), torch.floor(xy[..., 1]).long()
    inside = (col >= 0) & (col < w) & (row >= 0) & (row < h)
    flat = (torch.arange(b)[:, None, None] * h * w + row.clamp(0, h - 1) * w + col.clamp(0, w - 1)).reshape(-1)
    depth = old.depth.detach().cpu().double().reshape(-1)[flat].reshape(b, h, w)
    on_old = old_mask.cpu().reshape(-1)[flat].reshape(b, h, w)
    valid = new_mask.cpu() & inside & on_old & ((depth - z).abs() < DEPTH_TOL_CM)
    return torch.where(valid[..., None], flow, torch.zeros_like(flow)), valid


def extend_flow(flow: torch.Tensor, valid: torch.Tensor, radius: int = FLOW_PX) -> torch.Tensor:
    """(B, H, W, 2) flow known on `valid` (B, H, W) -> a field over the whole image: the flow itself where valid;
    elsewhere the valid flow's tent-weighted local mean (radius px), scaled down by the share of valid pixels
    around below one half, so it fades to exactly 0 at `radius` px (Chebyshev) from every valid pixel (pixels
    there are not resampled at all)."""
    if radius <= 0:
        return flow * valid[..., None]
    m = valid.to(flow.dtype)[..., None]
    num, den = tent_blur(flow * m, radius), tent_blur(m, radius)
    mean = num / den.clamp_min(0.5)           # den >= 0.5: the local mean; below: fades with the coverage
    mean = torch.where(den > 0, mean, torch.zeros_like(mean))
    return torch.where(valid[..., None], flow, mean)


def warp_image(image: torch.Tensor, flow: torch.Tensor, taps: torch.Tensor | None = None,
               restrict: torch.Tensor | None = None) -> torch.Tensor:
    """(B, H, W, C) float, (B, H, W, 2) px -> out[b, i, j] = image[b] bilinearly sampled at pixel centre (j + 0.5,
    i + 0.5) + flow[b, i, j] (edge values beyond the border). Where flow is exactly 0 the pixel is copied.

    taps, restrict  optional (B, H, W) bool: at `restrict` pixels only the bilinear taps on `taps` pixels count
                    (weights renormalised; plain bilinear if none does): a face pixel samples the old face only,
                    not the mouth's inside or the background next to it.
    """
    b, h, w, c = image.shape
    jj, ii = torch.meshgrid(torch.arange(w, dtype=flow.dtype), torch.arange(h, dtype=flow.dtype), indexing="xy")
    x, y = jj[None] + flow[..., 0], ii[None] + flow[..., 1]        # pixel-index coordinates of the sample
    x0, y0 = torch.floor(x), torch.floor(y)
    fx, fy = (x - x0)[..., None], (y - y0)[..., None]
    flat = image.reshape(b * h * w, c)
    base = (torch.arange(b) * h * w)[:, None, None]
    keep = None if taps is None else taps.reshape(-1)
    acc, wsum = torch.zeros_like(image), torch.zeros(b, h, w, 1, dtype=image.dtype)
    acc_m, wsum_m = torch.zeros_like(image), torch.zeros(b, h, w, 1, dtype=image.dtype)
    for dx, dy, wt in ((0, 0, (1 - fx) * (1 - fy)), (1, 0, fx * (1 - fy)), (0, 1, (1 - fx) * fy), (1, 1, fx * fy)):
        idx = (base + (y0 + dy).long().clamp(0, h - 1) * w + (x0 + dx).long().clamp(0, w - 1)).reshape(-1)
        v, wt = flat[idx].reshape(b, h, w, c), wt.to(image.dtype)
        acc, wsum = acc + wt * v, wsum + wt
        if keep is not None:
            wm = wt * keep[idx].reshape(b, h, w, 1).to(image.dtype)
            acc_m, wsum_m = acc_m + wm * v, wsum_m + wm
    out = acc / wsum.clamp_min(1e-12)
    if keep is not None:
        use = (wsum_m > 1e-9) & (restrict if restrict is not None else torch.ones(b, h, w, dtype=torch.bool))[..., None]
        out = torch.where(use, acc_m / wsum_m.clamp_min(1e-12), out)
    still = (flow == 0).all(-1, keepdim=True)
    return torch.where(still, image, out)

"""Corpus synthesis: sample parameters from the priors, frame the face (ifn.framing), render them over random
backgrounds, write shards.

Every shard has its own random stream derived from (seed, split, shard index), so shards are reproducible
one by one and byte-identical across runs with the same seed and params.
"""
from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import torch

from .atomic import atomic_path
from .config import Params, PriorConfig, SynthesizeConfig, load_params
from .corpus import SPLITS, write_shard
from .framing import frame
from .model.loader import load_face_model
from .model.layout import ParamLayout
from .model.priors import sample_parameters
from .model.reflectance import ReflectanceModel
from .nuisance import face_pixels, long_hair, paint_brows, paint_hair
from .paths import resolve
from .render.backgrounds import random_backgrounds
from .render.color import linear_to_srgb, srgb_to_linear
from .render.renderer import Renderer, RenderSettings
from .render.shading import shading_gram

REFLECTANCE_PATH = "models/face_model/reflectance.npz"


def build_renderer(params: Params, reflectance_path: str | Path = REFLECTANCE_PATH,
                   image_size: int | None = None) -> Renderer:
    """The project's renderer for params.yaml: face model region, own reflectance model, camera."""
    fm = load_face_model(params.face_model)
    refl = ReflectanceModel.load(resolve(reflectance_path)).truncate(params.reflectance.n_components)
    layout = ParamLayout(fm.n_shape, fm.n_expression, refl.n_components)
    overrides = {"image_size": image_size} if image_size else {}
    return Renderer(fm, refl, layout, RenderSettings.from_config(params.render, **overrides))


def face_weights(renderer: Renderer) -> torch.Tensor:
    """(V,) float weights: 1 on the face part, 0 elsewhere (what the losses and shading Gram measure)."""
    return renderer.face_model.part_mask("face").float()


def face_centre(renderer: Renderer) -> torch.Tensor:
    """(3,) model-space centre of the mean face's 68 landmarks, cm (what crops are centred on)."""
    ids = renderer.face_model.landmarks
    return renderer.face_model.mean[ids[ids >= 0]].mean(0)


def render_batch(renderer: Renderer, groups: dict[str, torch.Tensor], backgrounds: torch.Tensor,
                 weights: torch.Tensor, prior: PriorConfig | None = None, g: torch.Generator | None = None
                 ) -> dict[str, np.ndarray]:
    """Render named parameter groups over sRGB backgrounds -> the arrays of a shard (see ifn.corpus), with the
    nuisances of `prior` that have no parameters (random stream `g`): hair_prob > 0 paints a cap of hair on the
    scalp (`ifn.nuisance.paint_hair`), brow_prob > 0 eyebrows (`ifn.nuisance.paint_brows`), long_hair_prob > 0
    composites long hair around the head (`ifn.nuisance.long_hair`; the mask covers it). None: no nuisances."""
    hair_prob, brow_prob, long_hair_prob = ((prior.hair_prob, prior.brow_prob, prior.long_hair_prob) if prior
                                            else (0.0, 0.0, 0.0))
    with torch.no_grad():
        albedo = None
        if hair_prob > 0 or brow_prob > 0:
            albedo = renderer.albedo(groups)
            if hair_prob > 0:
                albedo = paint_hair(renderer, albedo, hair_prob, g, prior.hair_low_cm)
            if brow_prob > 0:
                albedo = paint_brows(renderer.face_model, albedo, brow_prob, g)
        out = renderer(groups, background=srgb_to_linear(backgrounds), albedo=albedo)
        image, mask = out.image, out.mask
        face = face_pixels(renderer, out.fragments)
        if long_hair_prob > 0:
            image, mask = long_hair(image, mask, face, out.landmarks, long_hair_prob, g)
        images = (linear_to_srgb(image) * 255).round().to(torch.uint8)
        return {
            "images": images.numpy(),
            "params": renderer.layout.join(groups).float().numpy(),
            "landmarks": out.landmarks.float().numpy(),
            "shading_gram": shading_gram(out.normals, weights).float().numpy(),
            "masks": mask.numpy(),
            "face_masks": (face & mask).numpy(),
        }


def shard_generator(seed: int, split: str, shard: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed * 1_000_003 + SPLITS.index(split) * 100_003 + shard)


def synthesize_shard(renderer: Renderer, config: SynthesizeConfig, seed: int, split: str, shard: int,
                     n: int) -> dict[str, np.ndarray]:
    g = shard_generator(seed, split, shard)
    weights = face_weights(renderer)
    names = renderer.face_model.expression_names
    centre = face_centre(renderer)
    parts = []
    for start in range(0, n, config.render_batch):
        m = min(config.render_batch, n - start)
        groups = frame(renderer, sample_parameters(m, renderer.layout, config.prior, g, names, centre),
                       config.framing, g)
        bg = random_backgrounds(m, renderer.settings.image_size, config.backgrounds, g)
        parts.append(render_batch(renderer, groups, bg, weights, config.prior, g))
    return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}


def synthesize(params_file: str | Path = "params.yaml", out_dir: str | Path | None = None,
               reflectance_path: str | Path = REFLECTANCE_PATH, overrides: dict | None = None,
               log=print) -> dict:
    """Write the corpus of params.yaml's `synthesize` section; returns its meta (also in meta.json)."""
    params = load_params(resolve(params_file), overrides)
    config = params.synthesize
    out_dir = resolve(out_dir or config.out_dir)
    renderer = build_renderer(params, reflectance_path)
    counts = {"train": config.n_train, "val": config.n_val, "test": config.n_test}
    t0 = time.perf_counter()
    with atomic_path(out_dir) as tmp:
        for split, total in counts.items():
            for shard, start in enumerate(range(0, total, config.shard_size)):
                n = min(config.shard_size, total - start)
                arrays = synthesize_shard(renderer, config, params.seed, split, shard, n)
                write_shard(tmp / split / f"shard_{shard:04d}", arrays)
                log(f"{split} shard {shard}: {n} images ({time.perf_counter() - t0:.0f} s)")
        seconds = time.perf_counter() - t0
        meta = {
            "counts": counts,
            "image_size": renderer.settings.image_size,
            "layout": renderer.layout.sizes,
            "seed": params.seed,
            "face_model": params.face_model.to_dict(),
            "render": params.render.to_dict(),
            "synthesize": json.loads(json.dumps(config.to_dict(), default=list)),
            "expression_names": list(renderer.face_model.expression_names),
        }
        (tmp / "meta.json").write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n")
    log(f"corpus: {sum(counts.values())} images in {seconds:.0f} s -> {out_dir}")
    return {**meta, "seconds": seconds}

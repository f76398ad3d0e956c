"""Renderer: face parameters -> image, mask, depth, triangle ids, landmarks.

Composition, as in PyTorch3D: the face model gives model-space geometry and albedo, the camera poses and
projects it, `shading` lights the vertices (Lambertian, SH light in camera space, per-vertex colour
interpolated over triangles), the rasterizer decides visibility and interpolates, and the result is
composited over a background.
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Mapping

import torch

from ..config import RenderConfig
from ..model.facemodel import FaceModel
from ..model.layout import ParamLayout
from ..model.reflectance import ReflectanceModel
from .camera import Camera
from . import numba_shading
from .raster import Fragments, RasterSettings, rasterize, uses_numba
from .shading import sh_shading, vertex_normals


@dataclass(frozen=True)
class RenderSettings:
    """Image formation settings (section `render` of params.yaml).

    image_size      square output size, pixels
    fov_deg         horizontal field of view, degrees
    distance_cm     camera-to-head-origin distance at zero translation, centimetres
    cull_backfaces  skip triangles facing away from the camera
    clamp_albedo    clamp the linear albedo model's output to [0, 1] before shading
    near            near clipping depth, centimetres
    compile         torch.compile the rasterizer's visibility pass (tensor path; see RasterSettings)
    backend         auto | numba | torch: the compiled CPU kernels of ifn.render.numba_kernels (visibility,
                    barycentrics, interpolation, vertex normals) or the tensor path (see RasterSettings)
    """

    image_size: int = 128
    fov_deg: float = 16.0
    distance_cm: float = 100.0
    cull_backfaces: bool = True
    clamp_albedo: bool = True
    near: float = 1.0
    compile: bool = False
    backend: str = "auto"

    @classmethod
    def from_config(cls, config: RenderConfig, **overrides) -> "RenderSettings":
        return cls(**{**{k: getattr(config, k) for k in (
            "image_size", "fov_deg", "distance_cm", "cull_backfaces", "clamp_albedo", "compile", "backend")},
                      **overrides})

    @property
    def camera(self) -> Camera:
        return Camera(self.image_size, self.fov_deg, self.distance_cm)

    @property
    def raster(self) -> RasterSettings:
        return RasterSettings(self.image_size, self.cull_backfaces, self.near, self.compile, self.backend)


@dataclass
class MeshRender:
    """Output of `render_mesh` (B images, H = W = image_size).

    image      (B, H, W, C) float, composited over the background
    mask       (B, H, W) bool, pixels covered by the mesh
    depth      (B, H, W) camera depth in cm, 0 on background
    fragments  the rasterizer's output (triangle ids, barycentrics) for further interpolation
    """

    image: torch.Tensor
    mask: torch.Tensor
    depth: torch.Tensor
    fragments: Fragments

    @property
    def pix_to_face(self) -> torch.Tensor:
        return self.fragments.pix_to_face


def composite(foreground: torch.Tensor, mask: torch.Tensor, background) -> torch.Tensor:
    """(B, H, W, C) over (B, H, W, C) | (C,) | scalar where `mask` (B, H, W) is set."""
    if not isinstance(background, torch.Tensor):
        background = foreground.new_tensor(background)
    return torch.where(mask[..., None], foreground, background.to(foreground).expand_as(foreground))


def render_mesh(vertices: torch.Tensor, triangles: torch.Tensor, colors: torch.Tensor, camera: Camera,
                raster: RasterSettings, background=0.0) -> MeshRender:
    """Render camera-space meshes with per-vertex colours.

    vertices (B, V, 3) camera space cm; triangles (F, 3); colors (B, V, C); background as in `composite`.
    """
    xy, depth = camera.project(vertices)
    frags = rasterize(xy, depth, triangles, raster)
    image = frags.interpolate(colors)
    return MeshRender(composite(image, frags.mask, background), frags.mask, frags.depth_image(), frags)


@dataclass
class FaceRender(MeshRender):
    """A rendered face: `MeshRender` plus the intermediate quantities of the image formation.

    vertices   (B, V, 3) camera space, cm
    normals    (B, V, 3) camera space unit normals
    albedo     (B, V, 3) linear RGB albedo
    shading    (B, V, 3) irradiance / pi per channel
    landmarks  (B, 68, 2) projected landmark vertices, pixels (NaN where the region lacks the landmark)
    """

    vertices: torch.Tensor = None
    normals: torch.Tensor = None
    albedo: torch.Tensor = None
    shading: torch.Tensor = None
    landmarks: torch.Tensor = None


class Renderer:
    """Parameters (flat vector or named groups of a ParamLayout) -> FaceRender."""

    def __init__(self, face_model: FaceModel, reflectance: ReflectanceModel, layout: ParamLayout,
                 settings: RenderSettings = RenderSettings()):
        if reflectance.n_vertices != face_model.n_vertices:
            reflectance = reflectance.subset(face_model.source_index)
        if layout.n_shape > face_model.n_shape or layout.n_expression > face_model.n_expression:
            raise ValueError(f"layout asks for {layout.n_shape} shape / {layout.n_expression} expression "
                             f"modes; {face_model.name} has {face_model.n_shape} / {face_model.n_expression}")
        self.face_model = face_model
        self.reflectance = reflectance
        self.layout = layout
        self.settings = settings
        self.camera = settings.camera

    def to(self, device=None, dtype=None) -> "Renderer":
        return Renderer(self.face_model.to(device, dtype), self.reflectance.to(device, dtype), self.layout,
                        self.settings)

    def resized(self, image_size: int) -> "Renderer":
        """The same face, camera (field of view) and settings at another output size: parameters render the
        same picture at a different resolution (pixel coordinates scale by image_size / the current size)."""
        if image_size == self.settings.image_size:
            return self
        return Renderer(self.face_model, self.reflectance, self.layout, replace(self.settings, image_size=image_size))

    def region(self, vertex_keep: torch.Tensor) -> tuple["Renderer", torch.Tensor]:
        """The renderer of the sub-mesh on the vertices where `vertex_keep` (V,) bool is set (triangles with all
        three corners kept; ifn.model.FaceModel.subset), same parameters and settings. Returns (renderer,
        new_id (V,): each vertex's id in the sub-mesh, -1 where dropped)."""
        model, new_id = self.face_model.subset(vertex_keep)
        kept = torch.nonzero(new_id >= 0).squeeze(1).to(self.reflectance.mean.device)
        return Renderer(model, self.reflectance.subset(kept), self.layout, self.settings), new_id

    def groups(self, params: torch.Tensor | Mapping[str, torch.Tensor]) -> Mapping[str, torch.Tensor]:
        return self.layout.split(params) if isinstance(params, torch.Tensor) else params

    def geometry(self, params) -> torch.Tensor:
        """Model-space vertices (B, V, 3), cm, from shape and expression."""
        g = self.groups(params)
        return self.face_model.geometry(g["shape"], g["expression"])

    def albedo(self, params) -> torch.Tensor:
        """(B, V, 3) albedo, clamped to [0, 1] if the settings say so."""
        a = self.reflectance.albedo(self.groups(params)["reflectance"])
        return a.clamp(0.0, 1.0) if self.settings.clamp_albedo else a

    def posed(self, params) -> torch.Tensor:
        """Camera-space vertices (B, V, 3), cm."""
        g = self.groups(params)
        return self.camera.pose(self.geometry(g), g["rotation"], g["translation"])

    def landmarks(self, vertices_cam: torch.Tensor) -> torch.Tensor:
        """(B, V, 3) camera-space vertices -> (B, 68, 2) pixel positions of the landmark vertices."""
        ids = self.face_model.landmarks.to(vertices_cam.device)
        xy, _ = self.camera.project(vertices_cam[:, ids.clamp(min=0)])
        return torch.where((ids >= 0)[None, :, None], xy, torch.full_like(xy, float("nan")))

    def __call__(self, params, background=0.0, albedo: torch.Tensor | None = None) -> FaceRender:
        """Render parameters over `background` (a colour or (B, H, W, 3) linear image). `albedo` (B, V, 3)
        linear RGB replaces the reflectance model's (e.g. with hair painted on: ifn.nuisance.paint_hair)."""
        g = self.groups(params)
        verts = self.posed(g)
        triangles = self.face_model.triangles.to(verts.device)
        albedo = self.albedo(g) if albedo is None else albedo
        if uses_numba(self.settings.backend, verts.device):
            normals = numba_shading.vertex_normals(verts, triangles)
            shading = numba_shading.sh_shading(normals, g["illumination"])
        else:
            normals = vertex_normals(verts, triangles)
            shading = sh_shading(normals, g["illumination"])
        out = render_mesh(verts, self.face_model.triangles, albedo * shading, self.camera,
                          self.settings.raster, background)
        return FaceRender(out.image, out.mask, out.depth, out.fragments, vertices=verts, normals=normals,
                          albedo=albedo, shading=shading, landmarks=self.landmarks(verts))

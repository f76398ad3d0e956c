"""ParamLayout: the flat parameter vector <-> named groups, derived from config (never literal offsets)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping

import torch

N_SH = 9            # 3 bands of real spherical harmonics
N_ILLUMINATION = N_SH * 3   # per colour channel


@dataclass(frozen=True)
class ParamLayout:
    """Named slices of the parameter vector.

    Groups, in order: shape (identity weights, N(0,1)), expression (blendshape weights, [0,1]),
    reflectance (albedo PCA weights, N(0,1)), illumination (9 SH x RGB, stored as (9, 3) row-major:
    coefficient k of channel c at 3*k + c), rotation (yaw, pitch, roll in radians), translation (cm, offset
    from the default camera-space head position).
    """

    n_shape: int
    n_expression: int
    n_reflectance: int

    @property
    def counts(self) -> dict[str, int]:
        """{"n_shape", "n_expression", "n_reflectance"}: the mode counts a network's checkpoint records."""
        return {"n_shape": self.n_shape, "n_expression": self.n_expression, "n_reflectance": self.n_reflectance}

    @property
    def sizes(self) -> dict[str, int]:
        return {
            "shape": self.n_shape,
            "expression": self.n_expression,
            "reflectance": self.n_reflectance,
            "illumination": N_ILLUMINATION,
            "rotation": 3,
            "translation": 3,
        }

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(self.sizes)

    @property
    def slices(self) -> dict[str, slice]:
        out, start = {}, 0
        for name, n in self.sizes.items():
            out[name] = slice(start, start + n)
            start += n
        return out

    @property
    def size(self) -> int:
        return sum(self.sizes.values())

    def __getitem__(self, name: str) -> slice:
        try:
            return self.slices[name]
        except KeyError:
            raise KeyError(f"no parameter group {name!r}; groups are {', '.join(self.names)}") from None

    def split(self, vector: torch.Tensor) -> dict[str, torch.Tensor]:
        """(..., P) -> {group: (..., n_group)}; illumination is reshaped to (..., 9, 3)."""
        if vector.shape[-1] != self.size:
            raise ValueError(f"parameter vector has {vector.shape[-1]} values, layout expects {self.size}")
        out = {name: vector[..., s] for name, s in self.slices.items()}
        out["illumination"] = out["illumination"].reshape(*vector.shape[:-1], N_SH, 3)
        return out

    def join(self, groups: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """Inverse of `split`. Every group must be present."""
        missing = [n for n in self.names if n not in groups]
        if missing:
            raise KeyError(f"missing parameter groups: {', '.join(missing)}")
        parts = []
        for name in self.names:
            g = groups[name]
            if name == "illumination":
                g = g.reshape(*g.shape[:-2], N_ILLUMINATION)
            if g.shape[-1] != self.sizes[name]:
                raise ValueError(f"group {name} has {g.shape[-1]} values, layout expects {self.sizes[name]}")
            parts.append(g)
        return torch.cat(parts, dim=-1)

    def zeros(self, *batch: int, dtype=torch.float32) -> dict[str, torch.Tensor]:
        """Neutral parameters (mean face, no expression, mean albedo, frontal pose, no light)."""
        return self.split(torch.zeros(*batch, self.size, dtype=dtype))

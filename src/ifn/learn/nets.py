"""InverseFaceNet's network: a ResNet-style encoder (from scratch) and one linear layer to all parameters.

Plain `nn.Module`s; losses and optimisers live in ifn.learn.module. Sizes come from params.yaml
(`train.net`): the CPU default is a small ResNet at 64 px; a paper-scale setting is e.g.
`blocks: [3, 4, 6, 3], widths: [256, 512, 1024, 2048], block: bottleneck, input_size: 224` (ResNet-50).
"""
from __future__ import annotations

import math
from typing import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F


class BasicBlock(nn.Module):
    """Two 3x3 convolutions with a residual connection (ResNet-18/34 block)."""

    def __init__(self, cin: int, cout: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.shortcut = nn.Identity() if stride == 1 and cin == cout else nn.Sequential(
            nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x):
        y = F.relu(self.bn1(self.conv1(x)))
        return F.relu(self.bn2(self.conv2(y)) + self.shortcut(x))


class Bottleneck(nn.Module):
    """1x1 - 3x3 - 1x1 residual block (ResNet-50 and deeper); `cout` is the block's output width."""

    def __init__(self, cin: int, cout: int, stride: int = 1):
        super().__init__()
        mid = cout // 4
        self.conv1 = nn.Conv2d(cin, mid, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(mid)
        self.conv2 = nn.Conv2d(mid, mid, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(mid)
        self.conv3 = nn.Conv2d(mid, cout, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(cout)
        self.shortcut = nn.Identity() if stride == 1 and cin == cout else nn.Sequential(
            nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x):
        y = F.relu(self.bn1(self.conv1(x)))
        y = F.relu(self.bn2(self.conv2(y)))
        return F.relu(self.bn3(self.conv3(y)) + self.shortcut(x))


BLOCKS = {"basic": BasicBlock, "bottleneck": Bottleneck}


class ResNetEncoder(nn.Module):
    """(B, 3, H, W) float images -> (B, widths[-1]) features (global average pooled).

    stem: 3x3 (small inputs) or 7x7/2 + maxpool (ImageNet-style, `stem: imagenet`), then one stage per entry
    of `blocks`, each starting with a stride-2 block except the first.
    """

    def __init__(self, blocks: Sequence[int] = (1, 1, 1, 1), widths: Sequence[int] = (32, 64, 128, 256),
                 block: str = "basic", stem: str = "small", stem_width: int = 32):
        super().__init__()
        if len(blocks) != len(widths):
            raise ValueError(f"blocks {list(blocks)} and widths {list(widths)} must have the same length")
        if stem == "imagenet":
            self.stem = nn.Sequential(nn.Conv2d(3, stem_width, 7, 2, 3, bias=False), nn.BatchNorm2d(stem_width),
                                      nn.ReLU(inplace=True), nn.MaxPool2d(3, 2, 1))
        else:
            self.stem = nn.Sequential(nn.Conv2d(3, stem_width, 3, 2, 1, bias=False), nn.BatchNorm2d(stem_width),
                                      nn.ReLU(inplace=True))
        kind = BLOCKS[block]
        stages, cin = [], stem_width
        for i, (n, w) in enumerate(zip(blocks, widths)):
            layers = [kind(cin, w, 1 if i == 0 else 2)] + [kind(w, w) for _ in range(n - 1)]
            stages.append(nn.Sequential(*layers))
            cin = w
        self.stages = nn.Sequential(*stages)
        self.out_features = cin
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x):
        return self.stages(self.stem(x)).mean((2, 3))


def view_size(input_size: int, input_zoom: float = 1.0) -> int:
    """Side (px) a whole image is resized to before the network's centre window of input_size px is taken:
    input_size x input_zoom, rounded to input_size + an even number (so the window is centred exactly)."""
    return int(input_size) + 2 * int(round(int(input_size) * (float(input_zoom) - 1.0) / 2))


class InverseFaceNet(nn.Module):
    """Image -> the whole parameter vector in one shot.

    Input: (B, 3, S, S) sRGB in [0, 1] with S = input_size (other sizes are resized bilinearly).
    input_zoom: the network looks at the central 1 / zoom of the image at higher resolution: the image is
    resized to view_size(input_size, zoom) px (antialiased bilinear) and its centre input_size x input_size
    window is kept (zoom 1: the whole image). Face crops have a margin (the 68-landmark box is ~0.68 of the
    side), so more of the input's pixels fall on the face.
    channels_last: keep the convolution weights and activations in NHWC order (same maths, faster on CPUs).
    Output: (B, P) parameters in the layout's order. The linear head predicts standardised parameters;
    `param_mean` / `param_std` (buffers, set from the training corpus with `set_param_stats`) map them back,
    so every output starts at the corpus mean with unit-scale errors. In eval mode the outputs are clamped
    to [`param_lo`, `param_hi`] (buffers, `set_param_range`: the training corpus's range; +-inf for networks
    saved before it existed).
    """

    def __init__(self, n_params: int, input_size: int = 96, blocks=(1, 1, 1, 1), widths=(32, 64, 128, 256),
                 block: str = "basic", stem: str = "small", stem_width: int = 32, dropout: float = 0.0,
                 channels_last: bool = False, input_zoom: float = 1.0):
        super().__init__()
        self.input_size = input_size
        self.input_zoom = float(input_zoom)
        self.view_size = view_size(input_size, input_zoom)
        self.channels_last = bool(channels_last)
        self.encoder = ResNetEncoder(blocks, widths, block, stem, stem_width)
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(self.encoder.out_features, n_params)
        nn.init.zeros_(self.head.bias)
        nn.init.normal_(self.head.weight, std=1e-3)
        self.register_buffer("param_mean", torch.zeros(n_params))
        self.register_buffer("param_std", torch.ones(n_params))
        self.register_buffer("param_lo", torch.full((n_params,), -math.inf))
        self.register_buffer("param_hi", torch.full((n_params,), math.inf))
        if self.channels_last:  # NHWC convolutions: ~1.25x faster training on this CPU (bench/train_bench.py)
            self.encoder.to(memory_format=torch.channels_last)

    def set_param_stats(self, mean: torch.Tensor, std: torch.Tensor) -> None:
        self.param_mean.copy_(mean)
        self.param_std.copy_(std.clamp_min(1e-6))

    def set_param_range(self, lo: torch.Tensor, hi: torch.Tensor) -> None:
        """(P,) bounds the outputs are clamped to in eval mode (the training corpus's range: e.g. blendshape
        weights in [0, 1]; a real photo can drive a network outside the range it was trained on)."""
        self.param_lo.copy_(lo)
        self.param_hi.copy_(hi)

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        for name, fill in (("param_lo", -math.inf), ("param_hi", math.inf)):   # networks saved before the range
            state_dict.setdefault(prefix + name, torch.full_like(getattr(self, name), fill))
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def to_view(self, images: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) -> (B, 3, view_size, view_size) (bilinear, antialiased; unchanged at that size): what the
        training augmentation works on; forward takes either this or the whole image."""
        v = self.view_size
        if images.shape[-1] != v or images.shape[-2] != v:
            images = F.interpolate(images, size=(v, v), mode="bilinear", align_corners=False, antialias=True)
        return images

    def resize(self, images: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) -> (B, 3, input_size, input_size): resized to view_size (to_view), then its centre
        window."""
        images = self.to_view(images)
        v = self.view_size
        if v != self.input_size:
            o = (v - self.input_size) // 2
            images = images[..., o:o + self.input_size, o:o + self.input_size]
        return images

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = (self.resize(images) - 0.5) / 0.25
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        z = self.head(self.dropout(self.encoder(x)))
        out = self.param_mean + self.param_std * z
        if not self.training:       # training sees the raw outputs (gradients everywhere)
            out = torch.maximum(torch.minimum(out, self.param_hi), self.param_lo)
        return out

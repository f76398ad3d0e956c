"""InverseFaceNet's network: a ResNet-style encoder (from scratch) and one linear layer to all parameters.

Plain `nn.Module`s; losses and optimisers live in ifn.learn.module. Sizes come from params.yaml
(`train.net`): the CPU default is a small ResNet at 64 px; a paper-scale setting is e.g.
`blocks: [3, 4, 6, 3], widths: [256, 512, 1024, 2048], block: bottleneck, input_size: 224` (ResNet-50).
"""
from __future__ import annotations

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


class InverseFaceNet(nn.Module):
    """Image -> the whole parameter vector in one shot.

    Input: (B, 3, S, S) sRGB in [0, 1] with S = input_size (other sizes are resized bilinearly).
    channels_last: keep the convolution weights and activations in NHWC order (same maths, faster on CPUs).
    Output: (B, P) parameters in the layout's order. The linear head predicts standardised parameters;
    `param_mean` / `param_std` (buffers, set from the training corpus with `set_param_stats`) map them back,
    so every output starts at the corpus mean with unit-scale errors.
    """

    def __init__(self, n_params: int, input_size: int = 96, blocks=(1, 1, 1, 1), widths=(32, 64, 128, 256),
                 block: str = "basic", stem: str = "small", stem_width: int = 32, dropout: float = 0.0,
                 channels_last: bool = False):
        super().__init__()
        self.input_size = input_size
        self.channels_last = bool(channels_last)
        self.encoder = ResNetEncoder(blocks, widths, block, stem, stem_width)
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(self.encoder.out_features, n_params)
        nn.init.zeros_(self.head.bias)
        nn.init.normal_(self.head.weight, std=1e-3)
        self.register_buffer("param_mean", torch.zeros(n_params))
        self.register_buffer("param_std", torch.ones(n_params))
        if self.channels_last:  # NHWC convolutions: ~1.25x faster training on this CPU (bench/train_bench.py)
            self.encoder.to(memory_format=torch.channels_last)

    def set_param_stats(self, mean: torch.Tensor, std: torch.Tensor) -> None:
        self.param_mean.copy_(mean)
        self.param_std.copy_(std.clamp_min(1e-6))

    def resize(self, images: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) -> (B, 3, input_size, input_size) (bilinear, antialiased; unchanged at that size)."""
        if images.shape[-1] != self.input_size or images.shape[-2] != self.input_size:
            images = F.interpolate(images, size=(self.input_size, self.input_size), mode="bilinear",
                                   align_corners=False, antialias=True)
        return images

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = (self.resize(images) - 0.5) / 0.25
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        z = self.head(self.dropout(self.encoder(x)))
        return self.param_mean + self.param_std * z

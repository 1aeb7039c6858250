"""The three networks of the First Order Motion Model (Siarohin et al., NeurIPS 2019).

Data flow, for a source picture ``S`` (the keyframe) and a driving frame ``D``:

1. :class:`KPDetector` finds ``K`` keypoints in each picture, each with a 2x2 Jacobian (the
   local affine motion around it): an hourglass predicts one heatmap per keypoint; the keypoint
   is the heatmap's soft-argmax and the Jacobian the heatmap-weighted average of four predicted
   maps.
2. :class:`DenseMotionNetwork` turns the two keypoint sets into a dense backward flow
   ``D -> S``: around each keypoint the first-order (affine) approximation
   ``z -> kp_S + J_S J_D^-1 (z - kp_D)``, plus the identity for the background; an hourglass
   that sees the Gaussian heatmap differences and the source warped by each local motion
   predicts soft masks that blend them, and an occlusion map.
3. :class:`OcclusionAwareGenerator` encodes ``S`` to features, warps them with the flow,
   multiplies them by the occlusion map (what the warp cannot show is inpainted) and decodes.

The codec splits step 3 (:meth:`OcclusionAwareGenerator.encode_source` once per keyframe,
:meth:`OcclusionAwareGenerator.animate` per frame) and runs step 1 on the encoder only: the
decoder receives the driving keypoints.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import nn
from torch.nn import functional as F

from keyface.fomm.config import FommConfig
from keyface.fomm.layers import (
    AntiAliasInterpolation2d,
    DownBlock2d,
    Hourglass,
    ResBlock2d,
    SameBlock2d,
    UpBlock2d,
    coordinate_grid,
    gaussian_heatmaps,
    sample,
)


class Keypoints(NamedTuple):
    """Keypoints of a batch of pictures, in normalised coordinates (see :mod:`.layers`)."""

    value: torch.Tensor
    """``(B, K, 2)`` positions ``(x, y)`` in [-1, 1]."""
    jacobian: torch.Tensor
    """``(B, K, 2, 2)`` local affine motion around each keypoint."""


class DenseMotion(NamedTuple):
    deformation: torch.Tensor
    """``(B, h, w, 2)`` backward flow driving -> source, normalised coordinates."""
    occlusion: torch.Tensor | None
    """``(B, 1, h, w)`` in (0, 1): 1 where the source is visible."""
    mask: torch.Tensor
    """``(B, K + 1, h, w)`` soft assignment to the background (0) and each keypoint's motion."""
    sparse_deformed: torch.Tensor
    """``(B, K + 1, C, h, w)`` the source warped by each of those motions."""


class GeneratorOutput(NamedTuple):
    prediction: torch.Tensor
    """``(B, 3, H, W)`` the animated picture in [0, 1]."""
    motion: DenseMotion


def _check(x: torch.Tensor, shape: tuple[int | None, ...], name: str) -> None:
    if x.ndim != len(shape) or any(
        s is not None and s != d for s, d in zip(shape, x.shape, strict=True)
    ):
        raise ValueError(f"{name} must have shape {shape} (None: any), got {tuple(x.shape)}")


class KPDetector(nn.Module):
    """Picture ``(B, 3, H, W)`` -> :class:`Keypoints` (upstream ``kp_detector``)."""

    def __init__(self, config: FommConfig) -> None:
        super().__init__()
        c = config
        self.predictor = Hourglass(
            c.kp_block_expansion, c.num_channels, c.kp_num_blocks, c.kp_max_features
        )
        self.kp = nn.Conv2d(self.predictor.out_filters, c.num_kp, kernel_size=7)
        self.jacobian = nn.Conv2d(self.predictor.out_filters, 4 * c.num_kp, kernel_size=7)
        # Untrained, every Jacobian is the identity (zero weights, bias (1, 0, 0, 1)).
        nn.init.zeros_(self.jacobian.weight)
        with torch.no_grad():
            self.jacobian.bias.copy_(torch.tensor([1.0, 0.0, 0.0, 1.0]).repeat(c.num_kp))
        self.temperature = c.kp_temperature
        self.num_kp = c.num_kp
        # Upstream has (and stores) the blur only when it downsamples.
        self.down = (
            AntiAliasInterpolation2d(c.num_channels, c.kp_scale_factor)
            if c.kp_scale_factor != 1
            else None
        )

    def forward(self, image: torch.Tensor) -> Keypoints:
        _check(image, (None, 3, None, None), "image")
        features = self.predictor(self.down(image) if self.down is not None else image)
        logits = self.kp(features)
        b, k, h, w = logits.shape
        heatmap = F.softmax(logits.reshape(b, k, h * w) / self.temperature, dim=2)
        grid = coordinate_grid(h, w, heatmap).reshape(1, 1, h * w, 2)
        value = (heatmap[..., None] * grid).sum(dim=2)
        maps = self.jacobian(features).reshape(b, k, 4, h * w)
        jacobian = (heatmap[:, :, None, :] * maps).sum(dim=-1).reshape(b, k, 2, 2)
        return Keypoints(value, jacobian)


class DenseMotionNetwork(nn.Module):
    """Source picture and two keypoint sets -> :class:`DenseMotion` (upstream
    ``generator.dense_motion_network``), at ``dm_scale_factor`` of the picture size."""

    def __init__(self, config: FommConfig) -> None:
        super().__init__()
        c = config
        k1 = c.num_kp + 1
        self.hourglass = Hourglass(
            c.dm_block_expansion, k1 * (c.num_channels + 1), c.dm_num_blocks, c.dm_max_features
        )
        self.mask = nn.Conv2d(self.hourglass.out_filters, k1, kernel_size=7, padding=3)
        self.occlusion = (
            nn.Conv2d(self.hourglass.out_filters, 1, kernel_size=7, padding=3)
            if c.estimate_occlusion_map
            else None
        )
        self.num_kp = c.num_kp
        self.kp_variance = c.kp_variance
        self.down = (
            AntiAliasInterpolation2d(c.num_channels, c.dm_scale_factor)
            if c.dm_scale_factor != 1
            else None
        )

    def sparse_motions(
        self, height: int, width: int, driving: Keypoints, source: Keypoints
    ) -> torch.Tensor:
        """``(B, K + 1, h, w, 2)``: the identity, then each keypoint's first-order motion."""
        b = driving.value.shape[0]
        identity = coordinate_grid(height, width, driving.value)[None, None]
        local = identity - driving.value[:, :, None, None, :]
        affine = torch.matmul(source.jacobian, torch.inverse(driving.jacobian))
        local = torch.einsum("bkij,bkhwj->bkhwi", affine, local)
        to_source = local + source.value[:, :, None, None, :]
        return torch.cat([identity.expand(b, 1, height, width, 2), to_source], dim=1)

    def forward(
        self, source_image: torch.Tensor, driving: Keypoints, source: Keypoints
    ) -> DenseMotion:
        small = self.down(source_image) if self.down is not None else source_image
        b, c, h, w = small.shape
        k1 = self.num_kp + 1
        heat = gaussian_heatmaps(driving.value, h, w, self.kp_variance) - gaussian_heatmaps(
            source.value, h, w, self.kp_variance
        )
        heat = torch.cat([heat.new_zeros(b, 1, h, w), heat], dim=1)[:, :, None]
        motions = self.sparse_motions(h, w, driving, source)
        repeated = small[:, None].expand(b, k1, c, h, w).reshape(b * k1, c, h, w)
        deformed = sample(repeated, motions.reshape(b * k1, h, w, 2)).reshape(b, k1, c, h, w)
        features = self.hourglass(torch.cat([heat, deformed], dim=2).reshape(b, -1, h, w))
        mask = F.softmax(self.mask(features), dim=1)
        deformation = (motions * mask[..., None]).sum(dim=1)
        occlusion = torch.sigmoid(self.occlusion(features)) if self.occlusion is not None else None
        return DenseMotion(deformation, occlusion, mask, deformed)


def _resize(x: torch.Tensor, height: int, width: int) -> torch.Tensor:
    if x.shape[-2:] == (height, width):
        return x
    return F.interpolate(x, size=(height, width), mode="bilinear", align_corners=False)


class OcclusionAwareGenerator(nn.Module):
    """Source picture, driving and source keypoints -> animated picture (upstream
    ``generator``)."""

    def __init__(self, config: FommConfig) -> None:
        super().__init__()
        c = config
        self.dense_motion_network = DenseMotionNetwork(c)
        be, mf, n = c.gen_block_expansion, c.gen_max_features, c.gen_num_down_blocks

        def width(level: int) -> int:
            return min(mf, be * 2**level)

        self.first = SameBlock2d(c.num_channels, be, kernel_size=7, padding=3)
        self.down_blocks = nn.ModuleList(DownBlock2d(width(i), width(i + 1)) for i in range(n))
        self.up_blocks = nn.ModuleList(UpBlock2d(width(n - i), width(n - i - 1)) for i in range(n))
        self.bottleneck = nn.Sequential()
        for i in range(c.gen_num_bottleneck_blocks):
            self.bottleneck.add_module(f"r{i}", ResBlock2d(width(n)))
        self.final = nn.Conv2d(be, c.num_channels, kernel_size=7, padding=3)

    def encode_source(self, source_image: torch.Tensor) -> torch.Tensor:
        """Features of the source picture (what depends on the keyframe only)."""
        _check(source_image, (None, 3, None, None), "source_image")
        out = self.first(source_image)
        for block in self.down_blocks:
            out = block(out)
        return out

    def animate(
        self,
        features: torch.Tensor,
        source_image: torch.Tensor,
        driving: Keypoints,
        source: Keypoints,
    ) -> GeneratorOutput:
        """The driving frame from the source's ``features`` (:meth:`encode_source`)."""
        motion = self.dense_motion_network(source_image, driving, source)
        h, w = features.shape[-2:]
        flow = _resize(motion.deformation.permute(0, 3, 1, 2), h, w).permute(0, 2, 3, 1)
        out = sample(features, flow)
        if motion.occlusion is not None:
            out = out * _resize(motion.occlusion, h, w)
        out = self.bottleneck(out)
        for block in self.up_blocks:
            out = block(out)
        return GeneratorOutput(torch.sigmoid(self.final(out)), motion)

    def forward(
        self, source_image: torch.Tensor, driving: Keypoints, source: Keypoints
    ) -> GeneratorOutput:
        return self.animate(self.encode_source(source_image), source_image, driving, source)

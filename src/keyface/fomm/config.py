"""Shape of a First Order Motion Model (stored in the model file's metadata).

The defaults are the public vox-256 configuration (``vox-256.yaml`` of Siarohin et al. 2019), so
that its checkpoint ``vox-cpk.pth.tar`` imports one to one; :meth:`FommConfig.tiny` is a reduced
variant that runs on a CPU in tests.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, fields


@dataclass(frozen=True)
class FommConfig:
    """Every number that decides a parameter's name or shape, plus the input size."""

    image_size: int = 256
    """Side of the square picture the networks see (the codec resizes its crop to this)."""
    num_kp: int = 10
    num_channels: int = 3
    estimate_jacobian: bool = True
    # keypoint detector (``kp_detector_params``)
    kp_temperature: float = 0.1
    kp_block_expansion: int = 32
    kp_max_features: int = 1024
    kp_scale_factor: float = 0.25
    kp_num_blocks: int = 5
    # generator (``generator_params``)
    gen_block_expansion: int = 64
    gen_max_features: int = 512
    gen_num_down_blocks: int = 2
    gen_num_bottleneck_blocks: int = 6
    estimate_occlusion_map: bool = True
    # dense motion network (``generator_params.dense_motion_params``)
    dm_block_expansion: int = 64
    dm_max_features: int = 1024
    dm_num_blocks: int = 5
    dm_scale_factor: float = 0.25
    kp_variance: float = 0.01
    """Variance of the Gaussian heatmaps around each keypoint (normalised coordinates)."""

    def __post_init__(self) -> None:
        if not self.estimate_jacobian:
            raise ValueError("keyface codes keypoints with Jacobians: estimate_jacobian must be on")
        if self.num_kp < 1 or self.num_channels != 3:
            raise ValueError("need num_kp >= 1 and num_channels == 3 (RGB)")
        for scale, blocks, what in (
            (self.kp_scale_factor, self.kp_num_blocks, "keypoint detector"),
            (self.dm_scale_factor, self.dm_num_blocks, "dense motion"),
        ):
            side = self.image_size * scale
            if side != int(side) or int(side) % (2**blocks):
                raise ValueError(
                    f"{what}: image_size * scale ({side:g}) must be a multiple of 2**{blocks}"
                )
            if not 0 < scale <= 1 or 1 / scale != int(1 / scale):
                raise ValueError(f"{what}: scale factor must be 1/N, got {scale}")
        if self.image_size % (2**self.gen_num_down_blocks):
            raise ValueError("image_size must be a multiple of 2**gen_num_down_blocks")

    @classmethod
    def vox256(cls) -> FommConfig:
        """The public vox-256 model (``vox-cpk.pth.tar``)."""
        return cls()

    @classmethod
    def tiny(cls, image_size: int = 64, num_kp: int = 10) -> FommConfig:
        """Same structure as vox-256 at a few thousand parameters (tests, CPU experiments)."""
        return cls(
            image_size=image_size,
            num_kp=num_kp,
            kp_block_expansion=4,
            kp_max_features=16,
            kp_num_blocks=3,
            gen_block_expansion=4,
            gen_max_features=16,
            gen_num_down_blocks=2,
            gen_num_bottleneck_blocks=2,
            dm_block_expansion=4,
            dm_max_features=16,
            dm_num_blocks=3,
        )

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> FommConfig:
        data = json.loads(text)
        if not isinstance(data, dict):
            raise ValueError("FOMM config must be a JSON object")
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown FOMM config fields: {', '.join(unknown)}")
        return cls(**data)

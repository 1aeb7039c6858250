"""The auxiliary stream (hybrid and bidirectional modes, docs/hybrid.md): the frames
downsampled and coded as one low-delay conventional stream beside the animation.

The animated frame is sharp but may be displaced; the upsampled aux frame is in the right place
but blurry. The decoder fuses both (:mod:`keyface.fusion`). ``keyface decode --aux-only`` shows
the aux stream alone.
"""

from keyface.auxstream.codec import (
    AUX_CODECS,
    AUX_SCALES,
    DEFAULT_AUX_SCALE,
    AuxDecoder,
    AuxEncoder,
    AuxError,
    aux_side,
    downsample,
    pack_frame,
    unpack_frame,
)

__all__ = [
    "AUX_CODECS",
    "AUX_SCALES",
    "DEFAULT_AUX_SCALE",
    "AuxDecoder",
    "AuxEncoder",
    "AuxError",
    "aux_side",
    "downsample",
    "pack_frame",
    "unpack_frame",
]

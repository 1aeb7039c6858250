"""RGB <-> Y'CbCr 4:2:0 for the raw-bitstream codecs (``hevc``, ``vvc``).

BT.601 matrix, full range (JPEG style), 8 or 10 bit samples. Chroma is subsampled by a 2x2 box
average (samples sited at the centre of each 2x2 block) and upsampled by centre-aligned bilinear
interpolation, or by replication when the encoder finds that closer to the source: pictures
that were themselves decoded from 4:2:0 video by FFmpeg (which replicates chroma) come back
exactly that way. The encoder signals that choice in one bit (``PictureFlags``); nothing else
about colour is signalled, both ends being ours.
"""

from __future__ import annotations

import numpy as np

from keyface.intra._base import even_pad
from keyface.intra._nal import PictureFlags

_KR, _KB = 0.299, 0.114
_KG = 1.0 - _KR - _KB
_CB_SCALE = 2.0 * (1.0 - _KB)  # B - Y = 1.772 U
_CR_SCALE = 2.0 * (1.0 - _KR)  # R - Y = 1.402 V
_G_U = _KB * _CB_SCALE / _KG  # G - Y = -0.344 U - 0.714 V
_G_V = _KR * _CR_SCALE / _KG

Planes = tuple[np.ndarray, np.ndarray, np.ndarray]


def _f32(x: float) -> np.float32:
    return np.float32(x)


def _split(image: np.ndarray) -> Planes:
    """Full-resolution float32 ``(Y, U, V)`` of an RGB image, Y in 0..255, U/V centred on 0."""
    rgb = image.astype(np.float32)
    r, g, b = rgb[..., 0], rgb[..., 1], rgb[..., 2]
    y = _f32(_KR) * r + _f32(_KG) * g + _f32(_KB) * b
    u = (b - y) * _f32(1.0 / _CB_SCALE)
    v = (r - y) * _f32(1.0 / _CR_SCALE)
    return y, u, v


def _box2(plane: np.ndarray) -> np.ndarray:
    """Average of each 2x2 block (even sides)."""
    return (plane[0::2, 0::2] + plane[1::2, 0::2] + plane[0::2, 1::2] + plane[1::2, 1::2]) * _f32(
        0.25
    )


def _upsample2(plane: np.ndarray) -> np.ndarray:
    """Double both sides of ``plane`` with centre-aligned bilinear interpolation (edge clamp)."""
    p = np.pad(plane.astype(np.float32, copy=False), 1, mode="edge")
    q1, q3 = _f32(0.25), _f32(0.75)
    # Rows: output row 2i = .75 p[i] + .25 p[i-1]; row 2i+1 = .75 p[i] + .25 p[i+1].
    centre = p[1:-1] * q3
    rows = np.empty((2 * plane.shape[0], p.shape[1]), dtype=np.float32)
    rows[0::2] = centre + q1 * p[:-2]
    rows[1::2] = centre + q1 * p[2:]
    centre = rows[:, 1:-1] * q3
    out = np.empty((rows.shape[0], 2 * plane.shape[1]), dtype=np.float32)
    out[:, 0::2] = centre + q1 * rows[:, :-2]
    out[:, 1::2] = centre + q1 * rows[:, 2:]
    return out


def _replicate2(plane: np.ndarray) -> np.ndarray:
    """Double both sides of ``plane`` by sample replication."""
    return np.repeat(np.repeat(plane, 2, axis=0), 2, axis=1)


def _quantise(plane: np.ndarray, offset: float, bits: int) -> np.ndarray:
    top = (1 << bits) - 1
    scaled = plane * _f32(top / 255.0) + _f32(offset * top / 255.0 + 0.5)
    np.clip(scaled, 0, top, out=scaled)
    return scaled.astype(np.uint8 if bits <= 8 else np.uint16)


def _prefers_nearest(u: np.ndarray, v: np.ndarray, us: np.ndarray, vs: np.ndarray) -> bool:
    def rgb_sse(up: np.ndarray, vp: np.ndarray) -> float:
        du, dv = u - up, v - vp
        dr, db, dg = _f32(_CR_SCALE) * dv, _f32(_CB_SCALE) * du, _f32(_G_U) * du + _f32(_G_V) * dv
        return float(np.sum(dr * dr, dtype=np.float64) + np.sum(db * db, dtype=np.float64)) + float(
            np.sum(dg * dg, dtype=np.float64)
        )

    return rgb_sse(_replicate2(us), _replicate2(vs)) < rgb_sse(_upsample2(us), _upsample2(vs))


def rgb_to_yuv420(image: np.ndarray, bits: int = 8) -> Planes:
    """Convert an ``(H, W, 3)`` uint8 RGB image (even ``H``, ``W``) into ``(Y, Cb, Cr)`` planes.

    The planes are uint8 for ``bits == 8`` and uint16 otherwise; Cb/Cr are ``(H/2, W/2)``.
    """
    h, w = image.shape[:2]
    if h % 2 or w % 2:
        raise ValueError(f"rgb_to_yuv420 needs even sides, got {w}x{h}")
    y, u, v = _split(image)
    return (
        _quantise(y, 0.0, bits),
        _quantise(_box2(u), 128.0, bits),
        _quantise(_box2(v), 128.0, bits),
    )


def prefers_nearest_chroma(image: np.ndarray) -> bool:
    """Whether replication beats bilinear upsampling of the box-averaged chroma of ``image``.

    Compares the RGB squared error that chroma subsampling alone causes with either filter
    (``image`` has even sides).
    """
    _, u, v = _split(image)
    return _prefers_nearest(u, v, _box2(u), _box2(v))


def yuv420_to_rgb(
    y: np.ndarray, cb: np.ndarray, cr: np.ndarray, bits: int = 8, nearest: bool = False
) -> np.ndarray:
    """Inverse of :func:`rgb_to_yuv420`: ``(H, W, 3)`` uint8 RGB with ``(H, W) = y.shape``.

    ``cb``/``cr`` must be ``(ceil(H/2), ceil(W/2))``; extra chroma rows/columns are ignored.
    ``nearest`` upsamples chroma by replication instead of bilinear interpolation.
    """
    h, w = y.shape
    scale = _f32(255.0 / ((1 << bits) - 1))
    upsample = _replicate2 if nearest else _upsample2
    luma = y.astype(np.float32) * scale + _f32(0.5)  # + 0.5: round by truncation below
    u = upsample(cb.astype(np.float32) * scale - _f32(128.0))[:h, :w]
    v = upsample(cr.astype(np.float32) * scale - _f32(128.0))[:h, :w]
    out = np.empty((h, w, 3), dtype=np.float32)
    out[..., 0] = luma + _f32(_CR_SCALE) * v
    out[..., 1] = luma - _f32(_G_U) * u - _f32(_G_V) * v
    out[..., 2] = luma + _f32(_CB_SCALE) * u
    np.clip(out, 0.0, 255.0, out=out)
    return out.astype(np.uint8)


def encode_planes(image: np.ndarray, bits: int) -> tuple[Planes, PictureFlags]:
    """Pad ``image`` to even sides, choose the chroma filter, convert to 4:2:0 planes."""
    padded, odd_w, odd_h = even_pad(image)
    y, u, v = _split(padded)
    us, vs = _box2(u), _box2(v)
    flags = PictureFlags(odd_w, odd_h, _prefers_nearest(u, v, us, vs))
    planes = (_quantise(y, 0.0, bits), _quantise(us, 128.0, bits), _quantise(vs, 128.0, bits))
    return planes, flags


def decode_planes(planes: tuple[np.ndarray, ...], flags: PictureFlags, bits: int) -> np.ndarray:
    """Inverse of :func:`encode_planes`: RGB cropped back to the original size."""
    y, cb, cr = planes
    rgb = yuv420_to_rgb(y, cb, cr, bits=bits, nearest=flags.nearest_chroma)
    height = rgb.shape[0] - flags.extra_rows - int(flags.odd_height)
    return rgb[: max(height, 0), : rgb.shape[1] - int(flags.odd_width)]

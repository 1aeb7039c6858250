"""``heif``: HEVC intra in a standard HEIF (``.heic``) file, via ``pillow_heif`` (libheif + x265).

Interoperable (any HEIF reader opens it) but the ISOBMFF container (``ftyp``, ``meta``,
``iloc``, ``iprp`` with ``hvcC``/``ispe``/``colr``/``pixi``, ``mdat``) costs about 380 bytes per
picture, which is why the raw ``hevc`` codec exists. libheif chooses the colour conversion
(BT.601 full range, 4:2:0) and x265 settings.

Quality: piecewise-linear map of the common quality to libheif's quality, calibrated on 256x256
face crops so that a given common quality gives about the PSNR of ``hevc`` (see ``_QUALITY``).
"""

from __future__ import annotations

import io

import numpy as np

from keyface.intra._base import (
    IntraCodecError,
    check_input_image,
    check_isobmff,
    check_pixels,
    decoded_image,
    interp_table,
    one_line,
)

#: (common quality, libheif quality) anchors: same mean RGB PSNR as ``hevc`` on 256x256 faces.
_QUALITY: tuple[tuple[int, int], ...] = (
    (1, 0),
    (10, 12),
    (20, 22),
    (30, 33),
    (40, 45),
    (50, 53),
    (60, 64),
    (70, 75),
    (80, 85),
    (90, 95),
    (100, 100),
)


def heif_quality(quality: int) -> int:
    """libheif quality (0..100) for the common ``quality`` (1..100)."""
    return interp_table(quality, _QUALITY)


class HeifIntraCodec:
    """HEVC intra picture in a HEIF container (pillow_heif)."""

    name = "heif"

    def encode(self, image: np.ndarray, quality: int) -> bytes:
        """Encode an RGB image at the common ``quality`` (1..100)."""
        q = heif_quality(quality)
        image = check_input_image(image)
        h, w = image.shape[:2]
        try:
            import pillow_heif

            heif = pillow_heif.from_bytes(mode="RGB", size=(w, h), data=image.tobytes())
            buf = io.BytesIO()
            heif.save(buf, quality=q, chroma="420")
        except Exception as exc:  # libheif reports failures as several exception types
            raise IntraCodecError(f"heif encoder failed: {one_line(exc)}") from None
        return buf.getvalue()

    def decode(self, data: bytes, max_pixels: int | None = None) -> np.ndarray:
        """Decode bytes made by :meth:`encode`; IntraCodecError if they are not such bytes
        or the picture has more than ``max_pixels`` pixels (read from the file's header,
        before decoding)."""
        data = check_isobmff(data, "heif")
        try:
            import pillow_heif

            heif = pillow_heif.open_heif(io.BytesIO(data), convert_hdr_to_8bit=True)
            picture = heif[0]
            check_pixels(*picture.size, max_pixels, "heif")
            if picture.mode != "RGB":
                raise IntraCodecError(f"corrupt heif data (mode {picture.mode})")
            array = np.asarray(picture)
        except IntraCodecError:
            raise
        except Exception as exc:  # libheif reports failures as several exception types
            raise IntraCodecError(f"corrupt heif data ({one_line(exc)})") from None
        return decoded_image(array, "heif")

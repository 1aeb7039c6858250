"""Conventional codec anchors for rate-distortion comparison.

The generative face video coding literature (and the JVET GFVC common test conditions) compare
against conventional codecs run in a video-conferencing configuration. Every anchor here uses:

* low delay: no frame reordering, no hidden or alt-ref frames (decode order = display order);
* exactly one intra frame, the first one (infinite GOP, no periodic intra, no scene-cut intra);
* constant QP (the sweep variable), no rate control;
* 8-bit 4:2:0 coding of the given RGB frames (converted to ``yuv420p`` with the BT.601 matrix
  that libswscale uses by default, and back the same way for metrics);
* real elementary-stream bytes: every NAL unit / OBU the decoder needs, parameter sets and
  start codes included, no container. Optional data that decoders ignore is not counted or not
  written: x264's user-data SEI (its version and option string, ~550 bytes, stripped from the
  stream before decoding), x265's info SEI (``info=0``), VVenC access unit delimiters
  (``AccessUnitDelimiter=0``, 6 bytes a picture). At 5 kbit/s over 4 s these would be a
  noticeable share of the rate.

Codecs (``ANCHORS``):

``x264``  libx264 (PyAV), preset medium, no tune, ``bframes=0:keyint=infinite:scenecut=0:qp=N``.
``x265``  libx265 (PyAV), preset medium, ``bframes=0:keyint=-1:scenecut=0:qp=N`` (low-delay P).
``av1``   SVT-AV1 (PyAV), preset 6, ``pred-struct=1`` (low delay), ``rc=0`` (CQP), ``keyint=-1``,
          ``scd=0``, ``aq-mode=0``, TPL off; decoded with dav1d. The QP is SVT-AV1's 1..63 scale
          (mapped to the 0..255 AV1 qindex).
``vvc``   VVenC through the static ffmpeg of ``imageio_ffmpeg`` (PyAV has no VVC encoder), preset
          medium, low delay (``PicReordering=0``, GOP 8 with 4 reference pictures as in the JVET
          low-delay configuration, ``DecodingRefreshType=0``, ``IntraPeriod=-1``), 8-bit internal
          coding, perceptual QPA off, one thread (multi-threaded VVenC sometimes produced an
          empty stream under load); decoded by the same ffmpeg's native VVC decoder. VVenC's
          low-delay pictures are "generalized P/B" (B slices whose two reference lists hold only
          earlier pictures, as in the JVET LDB configuration): nothing is reordered, which
          :attr:`AnchorResult.in_order` checks from the SPS and the picture order counts.

Every result reports what the decoder saw (:attr:`AnchorResult.intra_frames`,
:attr:`AnchorResult.frame_types`, :attr:`AnchorResult.in_order`) so that the configuration is
verified, not assumed.
"""

from __future__ import annotations

import functools
import itertools
import re
import subprocess
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

from keyface.ffmpeg import FfmpegError, ffmpeg_exe, run_ffmpeg
from keyface.intra import annexb_spans
from keyface.registry import Registry
from keyface.types import check_image


class AnchorError(Exception):
    """An anchor codec is unavailable, rejects its settings, or fails to encode or decode."""


@dataclass(frozen=True)
class AnchorSpec:
    """One conventional anchor codec: its QP sweep and range, speed preset and how it runs."""

    name: str
    qps: tuple[int, ...]
    """The default QP sweep (six points from about 40 kbit/s down to the codec's floor)."""
    qp_range: tuple[int, int]
    preset: str
    """The speed preset used unless told otherwise."""
    pyav: tuple[str, str] | None
    """``(PyAV encoder, PyAV decoder)``; ``None``: the ffmpeg executable (VVenC, ``vvc``)."""


# QP sweeps chosen with benchmarks/anchors_sweep.py on the first 125 frames of three 256x256
# 30 fps face crops (Obama_clip1, andrew_clip_1, feifeili_clip1): six points per codec from about
# 40 kbit/s down to the codec's useful floor. At 30 fps every inter picture costs roughly 15-50
# bytes even when little changes (picture/slice headers, skip flags), so no anchor reaches 2 kbit/s:
# mean rate at the coarsest QP is x264 ~14 kbit/s (QP 51), AV1 ~11 (QP 63), x265 ~8 (QP 51) and
# VVC ~5 (QP 52; QP 63 only gets to ~4 kbit/s at ~22 dB, so the sweep stops at 52).
ANCHOR_CODECS: Registry[AnchorSpec] = Registry("anchor codec", error=AnchorError)
"""Every anchor by name: the one table the bench, the sweep and the tests read."""

for _spec in (
    AnchorSpec("x264", (35, 38, 41, 44, 47, 51), (0, 51), "medium", ("libx264", "h264")),
    AnchorSpec("x265", (32, 35, 38, 42, 46, 51), (0, 51), "medium", ("libx265", "hevc")),
    AnchorSpec("av1", (42, 46, 50, 55, 60, 63), (1, 63), "6", ("libsvtav1", "libdav1d")),
    AnchorSpec("vvc", (29, 33, 37, 42, 47, 52), (0, 63), "medium", None),
):
    ANCHOR_CODECS.register(
        _spec.name,
        summary=f"{_spec.pyav[0]} through PyAV" if _spec.pyav else "VVenC through ffmpeg",
        speed="slow" if _spec.pyav is None else "fast",
    )(lambda spec=_spec: spec)

ANCHORS: tuple[str, ...] = tuple(ANCHOR_CODECS.names())
DEFAULT_QPS: dict[str, tuple[int, ...]] = {n: ANCHOR_CODECS.get(n).qps for n in ANCHORS}
QP_RANGES: dict[str, tuple[int, int]] = {n: ANCHOR_CODECS.get(n).qp_range for n in ANCHORS}
DEFAULT_PRESETS: dict[str, str] = {n: ANCHOR_CODECS.get(n).preset for n in ANCHORS}
"""Views of :data:`ANCHOR_CODECS` by field (what older callers read)."""
_PYAV_CODECS: dict[str, tuple[str, str]] = {
    n: pyav for n in ANCHORS if (pyav := ANCHOR_CODECS.get(n).pyav) is not None
}

_VVC_PARAMS = (
    "GOPSize=8:PicReordering=0:NumRefPics=4:DecodingRefreshType=0:IntraPeriod=-1"
    ":AccessUnitDelimiter=0:InternalBitDepth=8"
)


@dataclass(frozen=True)
class AnchorResult:
    """One encode/decode of a clip by a conventional codec at one QP.

    ``bytes`` counts the elementary stream (see the module docstring); ``kbps`` is
    ``bytes * 8 / duration / 1000`` with ``duration = len(frames) / fps``. ``frames`` are the
    decoded pictures as RGB uint8, in display order. ``intra_frames`` counts decoded pictures
    the decoder reports as intra or key; ``frame_types`` has one letter per decoded picture
    (``I``, ``P``, ``B``, ...); ``in_order`` is true when coding order equals display order.
    Timings are wall-clock seconds of the encoder and of the decoder alone (colour conversion
    excluded; for ``vvc`` they include starting the ffmpeg process).
    """

    codec: str
    qp: int
    bytes: int
    kbps: float
    frames: list[np.ndarray] = field(repr=False)
    encode_seconds: float
    decode_seconds: float
    intra_frames: int
    frame_types: str = ""
    in_order: bool = True

    @property
    def bits_per_frame(self) -> float:
        return 8.0 * self.bytes / max(1, len(self.frames))


# --------------------------------------------------------------------------------------------
# availability


@functools.cache
def _ffmpeg_lists(exe: str) -> tuple[str, str]:
    out = []
    for what in ("-encoders", "-decoders"):
        try:
            proc = subprocess.run(
                [exe, "-hide_banner", what], capture_output=True, text=True, timeout=30
            )
            out.append(proc.stdout)
        except (OSError, subprocess.SubprocessError):
            out.append("")
    return out[0], out[1]


@functools.cache
def anchor_available(codec: str) -> bool:
    """Whether ``codec`` (one of :data:`ANCHORS`) can be encoded and decoded here."""
    if codec in _PYAV_CODECS:
        enc, dec = _PYAV_CODECS[codec]
        names = av.codecs_available
        return enc in names and dec in names
    if codec == "vvc":
        exe = ffmpeg_exe()
        if exe is None:
            return False
        encoders, decoders = _ffmpeg_lists(exe)
        has_enc = re.search(r"^\s*V\S*\s+libvvenc\s", encoders, re.M) is not None
        has_dec = re.search(r"^\s*V\S*\s+vvc\s", decoders, re.M) is not None
        return has_enc and has_dec
    return False


# --------------------------------------------------------------------------------------------
# helpers


def _check_inputs(
    frames: Sequence[np.ndarray], fps: Fraction | float, codec: str, qp: int
) -> tuple[int, int, Fraction]:
    if codec not in ANCHORS:
        raise AnchorError(f"unknown anchor codec {codec!r}; choose from {', '.join(ANCHORS)}")
    lo, hi = QP_RANGES[codec]
    if not isinstance(qp, (int, np.integer)) or not lo <= int(qp) <= hi:
        raise AnchorError(f"{codec}: qp must be an integer in [{lo}, {hi}], got {qp!r}")
    if len(frames) == 0:
        raise AnchorError("no frames to encode")
    first = check_image(frames[0], "frames[0]")
    h, w = first.shape[:2]
    if w % 2 or h % 2:
        raise AnchorError(f"frame size {w}x{h} must be even for 4:2:0")
    for i, f in enumerate(frames):
        check_image(f, f"frames[{i}]")
        if f.shape != first.shape:
            raise AnchorError(f"frames[{i}] has shape {f.shape}, expected {first.shape}")
    rate = Fraction(fps).limit_denominator(1001)
    if rate <= 0:
        raise AnchorError(f"fps must be positive, got {fps}")
    if not anchor_available(codec):
        raise AnchorError(f"{codec}: encoder or decoder not available in this environment")
    return w, h, rate


def _to_yuv(frames: Sequence[np.ndarray]) -> list[av.VideoFrame]:
    out = []
    for image in frames:
        rgb = av.VideoFrame.from_ndarray(np.ascontiguousarray(image), format="rgb24")
        out.append(rgb.reformat(format="yuv420p"))
    return out


def _type_letter(frame: av.VideoFrame) -> str:
    try:
        name = av.video.frame.PictureType(int(frame.pict_type)).name
    except ValueError:
        name = "?"
    if name == "NONE":
        name = "?"
    return "I" if frame.key_frame and name in ("?", "I") else name[:1]


def _drop_h264_sei(data: bytes) -> bytes:
    """Remove SEI NAL units (type 6) from an H.264 Annex B access unit.

    x264 writes one user-data SEI with its version and full option string (~550 bytes) into the
    first access unit; it is not needed for decoding. Nothing else in this configuration is SEI.
    """
    kept = []
    for begin, end in annexb_spans(data):
        sc = 4 if data[begin : begin + 4] == b"\x00\x00\x00\x01" else 3
        if begin + sc < end and data[begin + sc] & 0x1F == 6:
            continue
        kept.append(data[begin:end])
    return b"".join(kept)


# --------------------------------------------------------------------------------------------
# PyAV codecs (x264, x265, SVT-AV1)


def _pyav_options(codec: str, qp: int, preset: str) -> dict[str, str]:
    if codec == "x264":
        params = f"bframes=0:keyint=infinite:min-keyint=1:scenecut=0:qp={qp}"
        return {"preset": preset, "x264-params": params}
    if codec == "x265":
        params = (
            f"bframes=0:keyint=-1:min-keyint=1:scenecut=0:qp={qp}:info=0:aud=0:hrd=0"
            ":hash=0:log-level=error"
        )
        return {"preset": preset, "x265-params": params}
    # SVT-AV1: qp with rc=0 is constant QP (CQP); TPL / AQ off so the QP really is constant.
    params = f"pred-struct=1:rc=0:keyint=-1:scd=0:aq-mode=0:enable-tpl-la=0:qp={qp}"
    return {"preset": preset, "qp": str(qp), "svtav1-params": params}


def _encode_pyav(
    frames: Sequence[np.ndarray], rate: Fraction, codec: str, qp: int, preset: str, w: int, h: int
) -> AnchorResult:
    enc_name, dec_name = _PYAV_CODECS[codec]
    yuv = _to_yuv(frames)
    try:
        enc = av.CodecContext.create(enc_name, "w")
        enc.width, enc.height = w, h
        enc.pix_fmt = "yuv420p"
        enc.time_base = 1 / rate
        enc.framerate = rate
        enc.gop_size = 1 << 30
        enc.max_b_frames = 0
        enc.options = _pyav_options(codec, qp, preset)
        packets: list[tuple[int | None, bytes]] = []
        t0 = time.perf_counter()
        for i, frame in enumerate(yuv):
            frame.pts = i
            frame.time_base = enc.time_base
            packets.extend((p.pts, bytes(p)) for p in enc.encode(frame))
        packets.extend((p.pts, bytes(p)) for p in enc.encode(None))
        encode_seconds = time.perf_counter() - t0
        extradata = bytes(enc.extradata or b"")
    except (av.FFmpegError, ValueError) as exc:
        raise AnchorError(f"{codec} qp={qp}: encoding failed ({exc})") from None

    if codec == "x264":
        packets = [(pts, _drop_h264_sei(data)) for pts, data in packets]
    payloads = [data for _, data in packets if data]
    total = len(extradata) + sum(len(d) for d in payloads)
    pts_list = [pts for pts, data in packets if data]
    in_order = len(payloads) == len(frames) and all(
        a is not None and b is not None and a < b for a, b in itertools.pairwise(pts_list)
    )

    try:
        dec = av.CodecContext.create(dec_name, "r")
        if extradata:
            dec.extradata = extradata
        decoded: list[av.VideoFrame] = []
        t0 = time.perf_counter()
        for data in payloads:
            decoded.extend(dec.decode(av.Packet(data)))
        decoded.extend(dec.decode(None))
        decode_seconds = time.perf_counter() - t0
    except (av.FFmpegError, ValueError) as exc:
        raise AnchorError(f"{codec} qp={qp}: decoding failed ({exc})") from None
    if len(decoded) != len(frames):
        raise AnchorError(f"{codec} qp={qp}: decoded {len(decoded)} of {len(frames)} frames")

    types = "".join(_type_letter(f) for f in decoded)
    images = [np.ascontiguousarray(f.to_ndarray(format="rgb24")) for f in decoded]
    return AnchorResult(
        codec=codec,
        qp=int(qp),
        bytes=total,
        kbps=total * 8 / float(len(frames) / rate) / 1000.0,
        frames=images,
        encode_seconds=encode_seconds,
        decode_seconds=decode_seconds,
        intra_frames=types.count("I"),
        frame_types=types,
        in_order=in_order,
    )


# --------------------------------------------------------------------------------------------
# VVC through the ffmpeg binary (VVenC encoder, native decoder)


def _run(args: list[str], timeout: float, what: str) -> subprocess.CompletedProcess[bytes]:
    """``ffmpeg -hide_banner -nostdin ARGS`` (the log level as ``args`` say)."""
    try:
        return run_ffmpeg(args, what=what, timeout=timeout, quiet=False)
    except FfmpegError as exc:
        raise AnchorError(str(exc)) from None


def _vvc_in_order(bitstream: Path, timeout: float) -> bool:
    """SPS says no reordering and picture order counts rise in bitstream order."""
    proc = _run(
        ["-bsf:v", "trace_headers", "-i", str(bitstream), "-c", "copy", "-f", "null", "-"],
        timeout,
        "vvc header trace",
    )  # fmt: skip
    log = proc.stderr.decode("utf-8", "replace")
    reorder = [
        int(v) for v in re.findall(r"dpb_max_num_reorder_pics\[\d+\]\s+\S+\s+=\s+(\d+)", log)
    ]
    pocs = [int(v) for v in re.findall(r"ph_pic_order_cnt_lsb\s+\S+\s+=\s+(\d+)", log)]
    lsb_bits = re.findall(r"sps_log2_max_pic_order_cnt_lsb_minus4\s+\S+\s+=\s+(\d+)", log)
    if not reorder or not pocs:
        return False
    wrap = 1 << (int(lsb_bits[0]) + 4) if lsb_bits else 256
    steps = [(b - a) % wrap for a, b in itertools.pairwise(pocs)]
    return max(reorder) == 0 and all(0 < s < wrap // 2 for s in steps)


def _encode_vvc(
    frames: Sequence[np.ndarray],
    rate: Fraction,
    qp: int,
    preset: str,
    w: int,
    h: int,
    timeout: float | None,
) -> AnchorResult:
    n = len(frames)
    if timeout is None:
        timeout = 60.0 + 3.0 * n * (w * h) / 65536.0
    yuv = _to_yuv(frames)
    fps_arg = f"{rate.numerator}/{rate.denominator}"
    with tempfile.TemporaryDirectory(prefix="keyface-vvc-") as tmp:
        raw = Path(tmp) / "in.yuv"
        stream = Path(tmp) / "out.266"
        with raw.open("wb") as fh:
            # libvvenc only accepts yuv420p10le: write the 8-bit samples shifted left by two
            # (exactly representable; VVenC codes them at 8 bits, InternalBitDepth=8).
            for frame in yuv:
                planes = frame.to_ndarray()  # (h * 3 / 2, w): Y, then U, then V
                fh.write((planes.astype("<u2") << 2).tobytes())
        enc_cmd = [
            "-loglevel", "warning", "-y",
            "-f", "rawvideo", "-pix_fmt", "yuv420p10le", "-s", f"{w}x{h}", "-r", fps_arg,
            "-i", str(raw),
            "-c:v", "libvvenc", "-threads", "1", "-preset", preset, "-qp", str(qp), "-qpa", "0",
            "-vvenc-params", _VVC_PARAMS,
            "-f", "vvc", str(stream),
        ]  # fmt: skip
        for _attempt in range(2):
            # One retry: a multi-threaded VVenC was seen to finish "successfully" with an empty
            # bitstream under heavy CPU load; single-threaded it has not happened, but a
            # second try costs nothing when the first one works.
            t0 = time.perf_counter()
            enc_proc = _run(enc_cmd, timeout, f"vvc qp={qp} encode")
            encode_seconds = time.perf_counter() - t0
            data = stream.read_bytes() if stream.exists() else b""
            if data:
                break
        if not data:
            tail = enc_proc.stderr.decode("utf-8", "replace").strip().splitlines()[-6:]
            raise AnchorError(f"vvc qp={qp}: encoder wrote no bitstream: " + " | ".join(tail))

        dec_cmd = [
            "-loglevel", "info", "-c:v", "vvc",
            "-i", str(stream), "-vf", "showinfo", "-fps_mode", "passthrough",
            "-f", "rawvideo", "-pix_fmt", "yuv420p", "pipe:1",
        ]  # fmt: skip
        t0 = time.perf_counter()
        proc = _run(dec_cmd, timeout, f"vvc qp={qp} decode")
        decode_seconds = time.perf_counter() - t0
        in_order = _vvc_in_order(stream, timeout)

    log = proc.stderr.decode("utf-8", "replace")
    infos = re.findall(r"iskey:(\d)\s+type:(\S+)", log)
    types = "".join("I" if key == "1" else t[:1] for key, t in infos)
    frame_bytes = w * h * 3 // 2
    out = proc.stdout
    if len(out) != n * frame_bytes:
        raise AnchorError(f"vvc qp={qp}: decoded {len(out) / frame_bytes:g} of {n} frames")
    images = []
    for i in range(n):
        planes = np.frombuffer(out, np.uint8, frame_bytes, i * frame_bytes).reshape(-1, w)
        frame = av.VideoFrame.from_ndarray(planes, format="yuv420p")
        images.append(np.ascontiguousarray(frame.to_ndarray(format="rgb24")))
    return AnchorResult(
        codec="vvc",
        qp=int(qp),
        bytes=len(data),
        kbps=len(data) * 8 / float(n / rate) / 1000.0,
        frames=images,
        encode_seconds=encode_seconds,
        decode_seconds=decode_seconds,
        intra_frames=types.count("I"),
        frame_types=types,
        in_order=in_order,
    )


# --------------------------------------------------------------------------------------------
# public entry point


def encode_anchor(
    frames: Sequence[np.ndarray],
    fps: Fraction | float,
    codec: str,
    qp: int,
    *,
    preset: str | None = None,
    timeout: float | None = None,
) -> AnchorResult:
    """Encode ``frames`` (RGB uint8, even size) with anchor ``codec`` at constant ``qp``; decode.

    ``preset`` overrides the codec's speed preset (default :data:`DEFAULT_PRESETS`; tests use
    faster ones). ``timeout`` bounds each ffmpeg process of the ``vvc`` anchor (default scales
    with the clip size). Raises :class:`AnchorError` for an unknown or unavailable codec, a QP
    out of range, bad frames, or an encoder/decoder failure.
    """
    w, h, rate = _check_inputs(frames, fps, codec, qp)
    preset = str(preset if preset is not None else DEFAULT_PRESETS[codec])
    if codec == "vvc":
        return _encode_vvc(frames, rate, int(qp), preset, w, h, timeout)
    return _encode_pyav(frames, rate, codec, int(qp), preset, w, h)

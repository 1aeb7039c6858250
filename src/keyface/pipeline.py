"""The one place that wires the stages together: files -> crop -> landmarks -> codec -> files.

Everything else in keyface is a stage that knows nothing of the others' I/O:
``io`` (video files) -> ``face`` (crop, landmarks, paste back) -> ``motion`` / ``entropy`` ->
``codec`` (encoder / decoder state machines) -> ``render`` -> ``bitstream``.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from fractions import Fraction
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from keyface.bitstream import BitstreamError, StreamHeader, read_stream, write_stream
from keyface.codec.config import CodecConfig, crop_box
from keyface.codec.decoder import DecodedFrame, DecoderCore
from keyface.codec.encoder import EncoderCore, EncoderStats
from keyface.face import (
    FaceNotFoundError,
    LandmarkTracker,
    apply_crop,
    paste_back,
    plan_crop,
)
from keyface.face._native_log import native_stderr_silenced
from keyface.io import VideoWriter, probe, read_frames
from keyface.render import Renderer
from keyface.types import CropBox, Frame

ProgressFn = Callable[[int], None]
"""Called with the number of frames just processed (drives progress bars)."""


PASTE_FEATHER = 0.08
"""Width of the soft seam when a face crop is pasted into the full frame (share of the side)."""
CROP_CACHE_BYTES = 512 << 20
"""The analysis keeps the face crops it measured, so that the encoder (and every trial of a
rate search) codes them without reading the video again, while they fit in this many bytes
(about 2,700 frames at 256x256: 90 s at 30 frames/s). A longer input is read once more for
coding instead, so that memory stays bounded."""


class UserInputError(Exception):
    """The input cannot be coded as asked (e.g. ``--no-crop`` on a non-square video)."""


@dataclass
class Analysis:
    """What a first pass over the input learns: crop, size, frame rate, landmarks per frame."""

    path: Path
    fps: Fraction
    size: int
    crop: CropBox | None
    landmarks: list[np.ndarray | None]
    source_size: tuple[int, int]
    seconds: float = 0.0
    crops: list[np.ndarray] | None = field(default=None, repr=False)
    """The ``size x size`` crops the landmarks were measured on, when they fit in
    :data:`CROP_CACHE_BYTES` (``None``: the encoder reads the video again)."""
    first_source: np.ndarray | None = field(default=None, repr=False)
    """The first source frame (full-frame streams code it as the background)."""

    def frames(self) -> Iterator[tuple[np.ndarray | None, np.ndarray]]:
        """``(source frame or None, crop)`` for every analysed frame: from memory when the
        crops were kept (the source only for the first frame), else read and cropped again."""
        if self.crops is not None:
            for i, crop in enumerate(self.crops):
                yield (self.first_source if i == 0 else None), crop
            return
        for frame, crop in cropped_frames(self.path, self.crop, self.size, self.frame_count):
            yield frame.image, crop

    @property
    def frame_count(self) -> int:
        return len(self.landmarks)

    @property
    def duration(self) -> float:
        return float(self.frame_count / self.fps) if self.fps else 0.0

    @property
    def face_frames(self) -> int:
        return sum(lm is not None for lm in self.landmarks)


@dataclass
class EncodeResult:
    data: bytes
    header: StreamHeader
    stats: EncoderStats
    analysis: Analysis
    encode_seconds: float
    config: CodecConfig

    @property
    def kbps(self) -> float:
        return 8 * len(self.data) / 1000 / max(self.analysis.duration, 1e-9)


@dataclass
class DecodeResult:
    header: StreamHeader
    frames: list[DecodedFrame]
    error: BitstreamError | None
    complete: bool
    decode_seconds: float
    background: np.ndarray | None = None
    keyframes: list[int] = field(default_factory=list)


def cropped_frames(
    path: str | Path, crop: CropBox | None, size: int, max_frames: int | None = None
) -> Iterator[tuple[Frame, np.ndarray]]:
    """``(source frame, size x size crop)`` pairs of a video."""
    for frame in read_frames(path, max_frames):
        image = frame.image if crop is None else apply_crop(frame.image, crop, size)
        yield frame, image


def analyze(
    path: str | Path,
    *,
    size: int = 256,
    crop: bool = True,
    max_frames: int | None = None,
    progress: ProgressFn | None = None,
    plan_progress: ProgressFn | None = None,
) -> Analysis:
    """First pass: plan the crop (a read of the video: ``plan_progress`` counts its frames)
    and measure face-mesh landmarks on every cropped frame (``progress``)."""
    with native_stderr_silenced():
        return _analyze(
            path,
            size=size,
            crop=crop,
            max_frames=max_frames,
            progress=progress,
            plan_progress=plan_progress,
        )


def _counted(frames: Iterator[Frame], progress: ProgressFn | None) -> Iterator[Frame]:
    for frame in frames:
        yield frame
        if progress:
            progress(1)


def _analyze(
    path: str | Path,
    *,
    size: int,
    crop: bool,
    max_frames: int | None,
    progress: ProgressFn | None,
    plan_progress: ProgressFn | None,
) -> Analysis:
    t0 = time.perf_counter()
    path = Path(path)
    info = probe(path)
    box: CropBox | None = None
    if crop:
        # Settled: the one crop decision (keyface.face.crop.settle_crop).
        box = plan_crop(_counted(read_frames(path, max_frames), plan_progress))
    else:
        if info.width != info.height:
            raise UserInputError(
                f"--no-crop needs a square input (already a face crop), got "
                f"{info.width}x{info.height}; drop --no-crop to crop it"
            )
        size = info.width
    landmarks: list[np.ndarray | None] = []
    crops: list[np.ndarray] | None = []
    first_source: np.ndarray | None = None
    with LandmarkTracker(video=True) as tracker:
        for frame, image in cropped_frames(path, box, size, max_frames):
            if first_source is None:
                first_source = frame.image
            landmarks.append(tracker.process(image))
            if crops is not None:
                crops.append(image)
                if len(crops) * image.nbytes > CROP_CACHE_BYTES:
                    crops = None  # too long to hold: the encoder reads the video again
            if progress:
                progress(1)
    if not landmarks:
        raise UserInputError(f"{path}: contains no decodable frame")
    if not any(lm is not None for lm in landmarks):
        raise FaceNotFoundError(f"{path}: no face found in any of {len(landmarks)} frames")
    return Analysis(
        path=path,
        fps=info.fps,
        size=size,
        crop=box,
        landmarks=landmarks,
        source_size=(info.width, info.height),
        seconds=time.perf_counter() - t0,
        crops=crops,
        first_source=first_source,
    )


def encode_analysis(
    analysis: Analysis,
    config: CodecConfig,
    *,
    with_background: bool = False,
    progress: ProgressFn | None = None,
) -> EncodeResult:
    """Run the encoder over the analysed frames (the crops the analysis kept, or the video
    read and cropped again when it was too long to keep them)."""
    config = replace(config, size=analysis.size)
    encoder = EncoderCore(
        config,
        analysis.fps,
        crop=analysis.crop,
        frame_count=analysis.frame_count,
        with_background=with_background,
    )
    packets = []
    t0 = time.perf_counter()
    background: np.ndarray | None = None
    for (source, image), landmarks in zip(analysis.frames(), analysis.landmarks, strict=False):
        if with_background and background is None and analysis.crop is not None:
            assert source is not None  # the first frame always has its source
            background = flatten_inside(source, analysis.crop)
        packets.extend(encoder.encode(image, landmarks, background=background))
        if progress:
            progress(1)
    packets.extend(encoder.flush())
    seconds = time.perf_counter() - t0
    data = write_stream(encoder.header, packets)
    return EncodeResult(data, encoder.header, encoder.stats, analysis, seconds, config)


def encode_at_kbps(
    analysis: Analysis,
    base: CodecConfig,
    kbps: float,
    *,
    with_background: bool = False,
    verbose: bool = False,
    progress: ProgressFn | None = None,
    on_trial: Callable[[CodecConfig, EncodeResult], None] | None = None,
    pinned: Mapping[str, Any] | None = None,
) -> EncodeResult:
    """``analysis`` coded at the rate closest to ``kbps`` (``keyface.codec.ratecontrol``): each
    trial of the search re-runs only the encoder, the landmarks are measured once.
    ``progress`` counts the frames of every trial, ``on_trial`` is called after each;
    ``pinned`` settings are kept over the ladder's at every trial
    (:func:`keyface.codec.ratecontrol.fit_bitrate`)."""
    from keyface.codec.ratecontrol import fit_bitrate

    def encode(config: CodecConfig) -> EncodeResult:
        return encode_analysis(analysis, config, with_background=with_background, progress=progress)

    return fit_bitrate(encode, base, kbps, verbose=verbose, on_trial=on_trial, pinned=pinned)


def flatten_inside(image: np.ndarray, box: CropBox, feather: float = PASTE_FEATHER) -> np.ndarray:
    """``image`` with the part of ``box`` that the pasted face fully covers made flat (a
    smooth colour ramp), so the full-frame background costs few bits there."""
    inset = feather * box.side + 2
    x0, y0 = max(0, int(np.ceil(box.x0 + inset))), max(0, int(np.ceil(box.y0 + inset)))
    x1 = min(image.shape[1], int(box.x0 + box.side - inset))
    y1 = min(image.shape[0], int(box.y0 + box.side - inset))
    out = image.copy()
    if x1 - x0 < 8 or y1 - y0 < 8:
        return out
    region = out[y0:y1, x0:x1]
    small = cv2.resize(region, (4, 4), interpolation=cv2.INTER_AREA)
    out[y0:y1, x0:x1] = cv2.resize(small, (x1 - x0, y1 - y0), interpolation=cv2.INTER_LINEAR)
    return out


class StreamDecoder:
    """The frames of a stream as they are decoded: iterate once, each frame is yielded as soon
    as its packet is decoded and nothing is kept, so memory does not grow with the video's
    length (a 10-minute stream at 256x256 held 3.5 GB when every frame was kept; issue 14).

    When the iteration ends, :attr:`error` is the damage that stopped it (``None`` if none;
    the frames before it were yielded), :attr:`complete` whether the stream ended with its
    END packet, :attr:`frames` the number of frames yielded and :attr:`keyframes` their
    indices. Raises :class:`BitstreamError` at construction if even the header is damaged.
    """

    def __init__(
        self,
        data: bytes,
        *,
        renderer: Renderer | None = None,
        fusion: str | None = None,
        aux_only: bool = False,
    ) -> None:
        self._parsed = read_stream(data)
        self.header: StreamHeader = self._parsed.header
        self._decoder = DecoderCore(
            self.header, renderer=renderer, fusion=fusion, aux_only=aux_only
        )
        self.error: BitstreamError | None = self._parsed.error
        self.complete = False
        self.frames = 0
        self.keyframes: list[int] = []
        self.decode_seconds = 0.0
        """Time spent decoding (not in the consumer of the frames)."""
        self._started = False

    @property
    def background(self) -> np.ndarray | None:
        """The decoded full-frame background (after its packet, which precedes frame 0)."""
        return self._decoder.background

    def __iter__(self) -> Iterator[DecodedFrame]:
        if self._started:
            raise RuntimeError("a StreamDecoder is iterated once")
        self._started = True
        parse_error = self.error
        for packet in self._parsed.packets:
            t0 = time.perf_counter()
            try:
                out = self._decoder.receive(packet)
            except BitstreamError as exc:
                self.error = exc
                break
            finally:
                self.decode_seconds += time.perf_counter() - t0
            for frame in out:
                self.frames += 1
                if frame.keyframe:
                    self.keyframes.append(frame.index)
                yield frame
        self.complete = (
            self._parsed.complete
            and parse_error is None
            and self.error is None
            and self._decoder.finished
        )


def decode_bytes(
    data: bytes,
    *,
    renderer: Renderer | None = None,
    progress: ProgressFn | None = None,
    fusion: str | None = None,
    aux_only: bool = False,
) -> DecodeResult:
    """Decode a whole stream into memory; what was decoded before any damage is kept (see
    ``error``). Files: :func:`decode_to_file` streams instead of holding every frame.
    ``fusion`` and ``aux_only``: see :class:`keyface.codec.decoder.DecoderCore`."""
    stream = StreamDecoder(data, renderer=renderer, fusion=fusion, aux_only=aux_only)
    frames: list[DecodedFrame] = []
    for frame in stream:
        frames.append(frame)
        if progress:
            progress(1)
    return DecodeResult(
        header=stream.header,
        frames=frames,
        error=stream.error,
        complete=stream.complete,
        decode_seconds=stream.decode_seconds,
        background=stream.background,
        keyframes=stream.keyframes,
    )


@dataclass(frozen=True)
class DecodeSummary:
    """What :func:`decode_to_file` wrote and found."""

    header: StreamHeader
    frames: int
    """Frames written (all of them, or those before the damage)."""
    size: tuple[int, int]
    """Written (width, height)."""
    error: BitstreamError | None
    complete: bool
    decode_seconds: float
    keyframes: list[int] = field(default_factory=list)


def check_full_frame(header: StreamHeader) -> None:
    """Raise :class:`UserInputError` unless ``header``'s stream can be decoded to the full
    source frame (it was coded with ``--full-frame``)."""
    if not header.has_background or header.crop is None:
        raise UserInputError(
            "the stream has no full-frame background: encode with --full-frame to use "
            "decode --full-frame"
        )


def decode_to_file(
    stream: StreamDecoder,
    output: str | Path,
    *,
    full: bool = False,
    progress: ProgressFn | None = None,
) -> DecodeSummary:
    """Decode a stream straight into a video file, frame by frame (memory stays flat however
    long the stream). Damage stops the decoding; the frames before it are written and the
    summary's ``error`` says what happened. ``full`` composes every face into the decoded full
    frame (:class:`keyface.compose.Composer`)."""
    header = stream.header
    if full:
        check_full_frame(header)
    size = (header.width, header.height)
    composer = None
    with VideoWriter(output, header.fps) as writer:
        for frame in stream:
            image = frame.image
            if full:
                if composer is None:
                    if stream.background is None:
                        raise BitstreamError("no BACKGROUND packet before the first frame")
                    from keyface.compose import Composer

                    composer = Composer(stream.background, _stream_box(header))
                image = composer.compose(image, frame.reference, frame.keypoints)
            size = (image.shape[1], image.shape[0])
            writer.write(_even(image))
            if progress:
                progress(1)
    return DecodeSummary(
        header=header,
        frames=stream.frames,
        size=size,
        error=stream.error,
        complete=stream.complete,
        decode_seconds=stream.decode_seconds,
        keyframes=stream.keyframes,
    )


def full_frame(header: StreamHeader, background: np.ndarray, face: np.ndarray) -> np.ndarray:
    """Paste a decoded face crop into the decoded full frame with a soft seam (the plain
    paste, without holding the body still: :func:`write_decoded` uses
    :class:`keyface.compose.Composer`)."""
    return paste_back(background, face, _stream_box(header), feather=PASTE_FEATHER)


def _stream_box(header: StreamHeader) -> CropBox:
    if header.crop is None:
        raise UserInputError("the stream was coded without a crop: there is no full frame")
    return crop_box(header.crop)


def write_decoded(
    result: DecodeResult, output: str | Path, *, full: bool = False
) -> tuple[int, int]:
    """Write decoded frames to a video; returns the written (width, height)."""
    header = result.header
    if full:
        check_full_frame(header)
        if result.background is None:
            raise UserInputError("the stream has no BACKGROUND packet: no full frame to use")
    size = (header.width, header.height)
    composer = None
    if full:
        from keyface.compose import Composer

        assert result.background is not None
        composer = Composer(result.background, _stream_box(header))
    with VideoWriter(output, header.fps) as writer:
        for frame in result.frames:
            image = frame.image
            if composer is not None:  # the face stitched in, the body held still
                image = composer.compose(image, frame.reference, frame.keypoints)
            size = (image.shape[1], image.shape[0])
            writer.write(_even(image))
    return size


def _even(image: np.ndarray) -> np.ndarray:
    """Drop a last row/column so yuv420p can hold the frame."""
    h, w = image.shape[:2]
    return image[: h - h % 2, : w - w % 2]


def crop_video(
    path: str | Path,
    output: str | Path,
    *,
    size: int = 256,
    max_frames: int | None = None,
    progress: ProgressFn | None = None,
    plan_progress: ProgressFn | None = None,
) -> CropBox:
    """Write the stable square face crop of a video (the evaluation protocol's input): the
    crop :func:`analyze` plans for ``encode``. ``plan_progress`` counts the frames of the
    planning read, ``progress`` those written."""
    info = probe(path)
    with native_stderr_silenced():
        box = plan_crop(_counted(read_frames(path, max_frames), plan_progress))
    with VideoWriter(output, info.fps) as writer:
        for _, image in cropped_frames(path, box, size, max_frames):
            writer.write(image)
            if progress:
                progress(1)
    return box

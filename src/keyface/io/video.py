"""Read any common video container into :class:`~keyface.types.Frame` records; write mp4/y4m.

mp4 output is H.264 at high quality (CRF 16, yuv420p, ``+faststart``); ``.y4m`` output is raw
4:2:0 (lossless up to chroma subsampling) for metrics. The frame rate is kept as an exact
fraction from input to output.
"""

from __future__ import annotations

from collections.abc import Iterator
from fractions import Fraction
from pathlib import Path
from types import TracebackType

import av
import numpy as np

from keyface.types import Frame, VideoInfo, check_image


class VideoError(Exception):
    """A video file cannot be opened, decoded or written."""


VIDEO_OUTPUT_SUFFIXES: tuple[str, ...] = (".mp4", ".mkv", ".mov", ".y4m")
"""What :class:`VideoWriter` writes: H.264 in ``.mp4``, ``.mkv`` or ``.mov``; raw 4:2:0 in
``.y4m``. The one list that help texts and error messages quote."""

VIDEO_OUTPUT_FORMATS = ".mp4, .mkv or .mov (H.264) or .y4m (raw 4:2:0)"
""":data:`VIDEO_OUTPUT_SUFFIXES` in words."""


def _open(path: str | Path) -> av.container.InputContainer:
    p = Path(path)
    if not p.exists():
        raise VideoError(f"{p}: no such file")
    try:
        container = av.open(str(p))
    except (av.FFmpegError, OSError, ValueError) as exc:
        raise VideoError(f"{p}: not a readable video ({exc})") from None
    if not container.streams.video:
        container.close()
        raise VideoError(f"{p}: has no video stream")
    return container


def _stream_fps(stream: av.video.stream.VideoStream) -> Fraction:
    rate = stream.average_rate or stream.guessed_rate or stream.base_rate
    if not rate or rate <= 0:
        return Fraction(25)
    return Fraction(rate.numerator, rate.denominator).limit_denominator(1001)


def probe(path: str | Path) -> VideoInfo:
    """Size, frame rate and frame count of the first video stream of ``path``."""
    with _open(path) as container:
        stream = container.streams.video[0]
        count = int(stream.frames) if stream.frames else None
        return VideoInfo(
            width=int(stream.codec_context.width),
            height=int(stream.codec_context.height),
            fps=_stream_fps(stream),
            frame_count=count,
            codec=stream.codec_context.name or "",
        )


def read_frames(path: str | Path, max_frames: int | None = None) -> Iterator[Frame]:
    """Yield the RGB frames of ``path`` in display order, at most ``max_frames`` of them."""
    with _open(path) as container:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        fps = _stream_fps(stream)
        index = 0
        try:
            for frame in container.decode(stream):
                if max_frames is not None and index >= max_frames:
                    return
                image = frame.to_ndarray(format="rgb24")
                yield Frame(index=index, image=np.ascontiguousarray(image), time=float(index / fps))
                index += 1
        except av.FFmpegError as exc:
            if index == 0:
                raise VideoError(f"{path}: cannot decode video ({exc})") from None
            # A damaged tail: keep what was decoded, like every player does.
            return


def read_video(path: str | Path, max_frames: int | None = None) -> tuple[VideoInfo, list[Frame]]:
    """Read a whole (short) video into memory: ``(info, frames)``."""
    info = probe(path)
    frames = list(read_frames(path, max_frames))
    if not frames:
        raise VideoError(f"{path}: contains no decodable frame")
    return info, frames


class VideoWriter:
    """Write RGB frames to ``.mp4`` (H.264, CRF ``crf``) or ``.y4m`` (raw yuv420p).

    Use as a context manager; frames must all have the same size. The folder must exist (no
    folder is created); :func:`keyface.io.output.atomic_output` gives a path that appears
    under its final name only once the writing has finished.
    """

    def __init__(self, path: str | Path, fps: Fraction | float, crf: int = 16) -> None:
        self.path = Path(path)
        self.fps = Fraction(fps).limit_denominator(1001)
        self.crf = crf
        self._container: av.container.OutputContainer | None = None
        self._stream: av.video.stream.VideoStream | None = None
        self._size: tuple[int, int] | None = None
        self.frames_written = 0
        suffix = self.path.suffix.lower()
        if suffix not in VIDEO_OUTPUT_SUFFIXES:
            raise VideoError(f"{self.path}: the output must be {VIDEO_OUTPUT_FORMATS}")

    def _start(self, width: int, height: int) -> None:
        try:
            if self.path.suffix.lower() == ".y4m":
                self._container = av.open(str(self.path), "w", format="yuv4mpegpipe")
                stream = self._container.add_stream("rawvideo", rate=self.fps)
                stream.pix_fmt = "yuv420p"
            else:
                options = {"movflags": "+faststart"} if self.path.suffix.lower() == ".mp4" else {}
                self._container = av.open(str(self.path), "w", options=options)
                stream = self._container.add_stream("libx264", rate=self.fps)
                stream.pix_fmt = "yuv420p"
                stream.options = {"crf": str(self.crf), "preset": "medium"}
        except (av.FFmpegError, OSError) as exc:
            raise VideoError(f"{self.path}: cannot open for writing ({exc})") from None
        stream.width = width
        stream.height = height
        self._stream = stream
        self._size = (width, height)

    def write(self, image: np.ndarray) -> None:
        check_image(image)
        h, w = image.shape[:2]
        if self._container is None:
            if w % 2 or h % 2:
                raise VideoError(f"{self.path}: frame size {w}x{h} must be even for yuv420p")
            self._start(w, h)
        elif (w, h) != self._size:
            raise VideoError(f"{self.path}: frame size changed from {self._size} to {(w, h)}")
        assert self._container is not None and self._stream is not None
        frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(image), format="rgb24")
        frame.pts = self.frames_written
        frame.time_base = 1 / self.fps
        for packet in self._stream.encode(frame):
            self._container.mux(packet)
        self.frames_written += 1

    def close(self) -> None:
        if self._container is None:
            return
        assert self._stream is not None
        for packet in self._stream.encode():
            self._container.mux(packet)
        self._container.close()
        self._container = None

    def __enter__(self) -> VideoWriter:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

"""The speaker's side of a call: frames from a camera (or a file played in real time), face
crop and landmarks measured locally, :class:`SenderSession` coding, datagrams out through a
:class:`SenderClient`.

* :class:`VideoFileSource` plays a file at its frame rate (it stands in for a camera);
  :class:`CameraSource` reads a V4L2 device through PyAV (best effort).
* :class:`LiveFaceAnalyzer` is the streaming counterpart of ``pipeline.analyze``: a face
  detection every ``detect_every`` frames drives a :class:`CropTracker` (a still box that
  glides when the face moves away), and face-mesh landmarks are measured on every crop.
* :class:`LiveSender` paces the frames, runs the analysis and the encoder on one worker
  thread (the event loop stays free for the transport), applies REFRESH_REQUEST feedback and
  reports the uplink bit rate.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Protocol

import av
import numpy as np
from PIL import Image

from keyface.bitstream import BackgroundPacket
from keyface.codec.config import CodecConfig
from keyface.face import (
    CropTracker,
    FaceDetector,
    FaceNotFoundError,
    LandmarkTracker,
    apply_crop,
    settle_crop,
    snap_to_grid,
)
from keyface.io import probe, read_frames
from keyface.io.video import VideoError
from keyface.pipeline import flatten_inside
from keyface.renderers import get_renderer
from keyface.server.client import ConnectionLost, SenderClient
from keyface.server.session import (
    DEFAULT_RESET_INTERVAL,
    LIVE_MIRROR,
    Datagram,
    SenderSession,
    live_generator,
)
from keyface.threads import apply_thread_policy
from keyface.types import CropBox

AVATAR_MAX_SIDE = 1024
AVATAR_MAX_BYTES = 200_000
"""An avatar photo travels on a reliable channel whose messages the server caps at 256 KiB."""


def avatar_payload(path: str | Path) -> bytes:
    """An avatar photo as the JPEG bytes ``SenderClient.send_avatar`` sends (at most
    1024 pixels a side, under 200 kB)."""
    try:
        with Image.open(path) as img:
            img = img.convert("RGB")
    except OSError as exc:
        raise VideoError(f"{path}: not a readable picture ({exc})") from None
    img.thumbnail((AVATAR_MAX_SIDE, AVATAR_MAX_SIDE))
    for quality in (90, 80, 70, 55, 40):
        buf = io.BytesIO()
        img.save(buf, format="JPEG", quality=quality)
        if buf.tell() <= AVATAR_MAX_BYTES:
            return buf.getvalue()
    raise VideoError(f"{path}: cannot make the picture small enough to send")


class FrameSource(Protocol):
    width: int
    height: int
    fps: Fraction
    realtime: bool
    """True for a file: :class:`LiveSender` paces it; a camera paces itself."""

    def __iter__(self) -> Iterator[np.ndarray]: ...


class VideoFileSource:
    """A video file as a camera: its frames at its frame rate (``loop`` repeats it)."""

    realtime = True

    def __init__(self, path: str | Path, *, loop: bool = False, max_frames: int | None = None):
        info = probe(path)
        self.path = Path(path)
        self.width, self.height, self.fps = info.width, info.height, info.fps
        self.loop = loop
        self.max_frames = max_frames

    def __iter__(self) -> Iterator[np.ndarray]:
        n = 0
        while True:
            empty = True
            for frame in read_frames(self.path):
                empty = False
                if self.max_frames is not None and n >= self.max_frames:
                    return
                yield frame.image
                n += 1
            if not self.loop or empty:
                return


class CameraSource:
    """A camera through PyAV (``v4l2`` on Linux): e.g. ``/dev/video0``. Best effort: the
    device's own format and rate are asked for, not guaranteed."""

    realtime = False

    def __init__(
        self,
        device: str,
        *,
        fps: int = 30,
        size: tuple[int, int] = (640, 480),
        input_format: str = "v4l2",
    ) -> None:
        options = {"framerate": str(fps), "video_size": f"{size[0]}x{size[1]}"}
        try:
            self._container = av.open(device, format=input_format, options=options)
        except (av.FFmpegError, OSError, ValueError) as exc:
            raise VideoError(f"{device}: cannot open camera ({exc})") from None
        stream = self._container.streams.video[0]
        self.width = int(stream.codec_context.width)
        self.height = int(stream.codec_context.height)
        rate = stream.average_rate or stream.guessed_rate
        self.fps = Fraction(rate) if rate else Fraction(fps)

    def __iter__(self) -> Iterator[np.ndarray]:
        try:
            for frame in self._container.decode(video=0):
                yield np.ascontiguousarray(frame.to_ndarray(format="rgb24"))
        finally:
            self._container.close()


class LiveFaceAnalyzer:
    """Face crop and landmarks of a live stream, frame by frame (not thread-safe).

    The box comes from a :class:`CropTracker` fed with a detection every ``detect_every``
    frames; ``freeze`` keeps the first box for good, on the pixel grid (needed when the
    server pastes the face into the sender's background; :func:`keyface.face.snap_to_grid`).
    A square input whose face box covers most of it is used whole, as ``pipeline.analyze``
    does.
    """

    def __init__(
        self,
        width: int,
        height: int,
        *,
        size: int = 256,
        detect_every: int = 15,
        freeze: bool = False,
    ) -> None:
        self.width, self.height, self.size = width, height, size
        self.detect_every = max(1, detect_every)
        self.freeze = freeze
        self.tracker = CropTracker(width, height)
        self.detector = FaceDetector()
        self.landmarks = LandmarkTracker(video=True)
        self.box: CropBox | None = None
        self._frames = 0
        self._whole = False

    def find_face(self, image: np.ndarray) -> CropBox | None:
        """Look for the face that starts the stream; its box, or ``None``."""
        faces = self.detector.detect(image)
        if not faces:
            return None
        box = settle_crop(self.tracker.update(faces[0]))  # the offline crop's decision
        self._whole = box == CropBox.full(self.width, self.height)
        if self.freeze:  # one box for the whole call: on the pixel grid (fast composition)
            box = snap_to_grid(box)
        self.box = box
        return box

    def process(self, image: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        """``(crop, landmarks or None)`` of the next frame (after :meth:`find_face`)."""
        assert self.box is not None, "find_face() first"
        if not (self._whole or self.freeze) and self._frames % self.detect_every == 0:
            faces = self.detector.detect(image)
            self.box = self.tracker.update(faces[0] if faces else None)
        self._frames += 1
        crop = apply_crop(image, self.box, self.size)
        return crop, self.landmarks.process(crop)

    def close(self) -> None:
        self.detector.close()
        self.landmarks.close()


@dataclass
class SendReport:
    frames: int = 0
    """Frames coded and sent."""
    skipped: int = 0
    """Source frames skipped: before the first face, or because coding fell behind."""
    keyframes: int = 0
    idr_keyframes: int = 0
    datagrams: int = 0
    bits: int = 0
    seconds: float = 0.0
    dropped_motion: int = 0
    refresh_requests: int = 0
    motion_bits: int = 0
    """MOTION packets as sent (redundant copies included)."""
    acks: int = 0
    based: int = 0
    """Frames coded from an acknowledged frame's motion state."""
    redundant: int = 0
    """Frames that carried copies of earlier frames' motion."""
    copies: int = 0
    losses_seen: int = 0
    kbps_windows: list[float] = field(default_factory=list)
    """The periodic uplink kbit/s figures (window ``SenderSession.rate_window_s``)."""

    @property
    def kbps(self) -> float:
        """Mean uplink bit rate of what was coded (datagram payloads)."""
        return self.bits / 1000 / max(self.seconds, 1e-9)


class LiveSender:
    """Stream a :class:`FrameSource` to a room through a connected :class:`SenderClient`.

    Two worker threads form a pipeline: one reads frames and measures the crop and the
    landmarks, the other runs the encoder (and applies feedback); a third codes the
    ``full_frame`` background once, beside them. A slow keyframe (intra
    coding takes tens to hundreds of milliseconds) then delays the frames behind it but does
    not stop the capture; motion-only frames code in about a millisecond and catch up.
    """

    def __init__(
        self,
        source: FrameSource,
        client: SenderClient,
        config: CodecConfig,
        *,
        reset_interval: int | None = DEFAULT_RESET_INTERVAL,
        feedback: bool = True,
        redundancy: bool = True,
        full_frame: bool = False,
        detect_every: int = 15,
        max_lag_frames: float = 2.0,
        max_faceless_frames: int = 300,
        report: Callable[[str], None] | None = None,
        report_every_s: float = 2.0,
        record: bool = False,
        avatar: bytes | None = None,
        mirror: str | None = LIVE_MIRROR,
    ) -> None:
        self.source = source
        self.mirror = mirror
        """The renderer the encoder predicts its frames with in place of the default renderer
        (``None``: keep ``config.generator``; :func:`keyface.server.live.live_generator`)."""
        self.avatar = avatar
        self.client = client
        self.config = config
        self.reset_interval = reset_interval
        self.feedback = feedback
        self.redundancy = redundancy
        self.full_frame = full_frame
        self.detect_every = detect_every
        self.max_lag_frames = max_lag_frames
        self.max_faceless_frames = max_faceless_frames
        self.report = report
        self.report_every_s = report_every_s
        self.session: SenderSession | None = None
        self.capture_times: dict[int, float] = {}
        """Frame index -> capture time (``time.monotonic()``): for latency measurements."""
        self.recorded: list[list[Datagram]] | None = [] if record else None
        """With ``record``: the datagrams of every frame, before any loss."""
        self.summary = SendReport()
        self._capture = ThreadPoolExecutor(max_workers=1, thread_name_prefix="keyface-capture")
        self._encoder = ThreadPoolExecutor(max_workers=1, thread_name_prefix="keyface-encode")
        self._background = ThreadPoolExecutor(
            max_workers=1, thread_name_prefix="keyface-background"
        )
        self._pending: list[asyncio.Future[bytes]] = []
        """The background's coding, while it runs."""
        self._analyzer: LiveFaceAnalyzer | None = None
        self._failure: BaseException | None = None
        client.on_feedback = self._feedback

    # -- worker threads -------------------------------------------------------------------------
    def _prepare(self) -> None:
        """Capture thread: load the face models before the clock starts."""
        self._analyzer = LiveFaceAnalyzer(
            self.source.width,
            self.source.height,
            size=self.config.size,
            detect_every=self.detect_every,
            freeze=self.full_frame,
        )
        self._analyzer.detector.detect(np.zeros((64, 64, 3), dtype=np.uint8))
        # The encoder's renderer: a learned one loads its weights and exports its network to
        # ONNX once per process (about 1.3 s), which must not happen at the first face.
        get_renderer(live_generator(self.config.generator, self.mirror))
        apply_thread_policy()

    def _analyze(
        self, image: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray | None, CropBox | None] | None:
        """Capture thread: ``(crop, landmarks, first box or None)``; ``None`` before the
        first face."""
        analyzer = self._analyzer
        assert analyzer is not None
        first: CropBox | None = None
        if analyzer.box is None:
            first = analyzer.find_face(image)
            if first is None:
                return None
        crop, landmarks = analyzer.process(image)
        return crop, landmarks, first

    def _encode(
        self,
        crop: np.ndarray,
        landmarks: np.ndarray | None,
        captured: float,
        first: tuple[CropBox, np.ndarray] | None,
    ) -> tuple[list[Datagram], np.ndarray | None]:
        """Encoder thread: the datagrams of one frame (and, once, the background to code)."""
        background: np.ndarray | None = None
        if first is not None:
            box, image = first
            self.session = SenderSession(
                self.config,
                self.source.fps,
                crop=box,
                reset_interval=self.reset_interval,
                feedback=self.feedback,
                redundancy=self.redundancy,
                mirror=self.mirror,
            )
            if self.full_frame:
                background = flatten_inside(image, box)
        assert self.session is not None
        self.capture_times[self.session.stats.frames] = captured
        # The session's clock is when the datagrams leave (not the capture time): the round
        # trip it measures from the acknowledgements must not include the analysis.
        return self.session.push_frame(crop, landmarks, time.monotonic()), background

    def _code_background(self, image: np.ndarray) -> bytes:
        """Background thread: the BACKGROUND packet of the full frame. Intra coding of a
        1280x720 picture takes about 1.5 s of CPU (x265); on the encoder thread it held up
        the first 40 frames of the call, a second of latency the path had to catch up."""
        assert self.session is not None
        data = self.session.encoder.intra.encode(image, self.config.keyframe_quality)
        return bytes(BackgroundPacket(frame_index=0, data=data))

    def _background_done(self, future: asyncio.Future[bytes]) -> None:
        if future.cancelled():
            return
        if future.exception() is not None:
            self._failure = self._failure or future.exception()
            return
        self.client.send_background(future.result())

    def _feedback(self, payload: bytes) -> None:
        session = self.session
        if session is not None:  # applied between frames, on the encoder thread
            with contextlib.suppress(RuntimeError):  # the worker has shut down
                self._encoder.submit(session.receive_feedback, payload, time.monotonic())

    # -- event loop ---------------------------------------------------------------------------
    def _sent(self, future: asyncio.Future[tuple[list[Datagram], np.ndarray | None]]) -> None:
        if future.cancelled():
            return
        if future.exception() is not None:
            self._failure = self._failure or future.exception()
            return
        datagrams, background = future.result()
        if background is not None:  # coded beside the frames, sent when ready
            coding = asyncio.get_running_loop().run_in_executor(
                self._background, self._code_background, background
            )
            coding.add_done_callback(self._background_done)
            self._pending.append(coding)
        for d in datagrams:
            self.client.send(d)
        if self.recorded is not None:
            self.recorded.append(datagrams)

    async def run(self, duration_s: float | None = None) -> SendReport:
        """Send until the source ends (or ``duration_s``); returns the summary."""
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(self._capture, self._prepare)
        if self.avatar is not None:
            self.client.send_avatar(self.avatar)
        frames = iter(self.source)
        period = 1.0 / float(self.source.fps)
        start = time.monotonic()
        next_report = start + self.report_every_s
        summary = self.summary
        source_index = 0
        faceless = 0
        encoding: list[asyncio.Future[tuple[list[Datagram], np.ndarray | None]]] = []
        try:
            while duration_s is None or time.monotonic() - start < duration_s:
                if self._failure is not None:
                    raise self._failure
                image = await loop.run_in_executor(self._capture, next, frames, None)
                if image is None:
                    break
                if not self.client.connected:
                    raise ConnectionLost("the connection to the server closed")
                if self.source.realtime:  # a camera would deliver this frame at `due`
                    due = start + source_index * period
                    source_index += 1
                    wait = due - time.monotonic()
                    if wait > 0:
                        await asyncio.sleep(wait)
                    elif -wait > self.max_lag_frames * period:
                        summary.skipped += 1  # analysis fell behind: skip, as a camera would
                        continue
                    captured = due
                else:
                    captured = time.monotonic()
                analysed = await loop.run_in_executor(self._capture, self._analyze, image)
                if analysed is None:
                    summary.skipped += 1
                    faceless += 1
                    if faceless > self.max_faceless_frames:
                        raise FaceNotFoundError(f"no face in the first {faceless} frames")
                    continue
                crop, landmarks, box = analysed
                first = None if box is None else (box, image)
                future = loop.run_in_executor(
                    self._encoder, self._encode, crop, landmarks, captured, first
                )
                future.add_done_callback(self._sent)
                encoding = [f for f in encoding if not f.done()] + [future]
                now = time.monotonic()
                if now >= next_report:
                    next_report = now + self.report_every_s
                    self._report(now, start)
            await asyncio.gather(*encoding, return_exceptions=True)
            await asyncio.gather(*self._pending, return_exceptions=True)
            if self._failure is not None:
                raise self._failure
        finally:
            await loop.run_in_executor(self._capture, self._close_analyzer)
            self._capture.shutdown(wait=False)
            self._encoder.shutdown(wait=False, cancel_futures=True)
            self._background.shutdown(wait=False, cancel_futures=True)
        self._update(time.monotonic(), start)
        return summary

    def _close_analyzer(self) -> None:
        if self._analyzer is not None:
            self._analyzer.close()

    def _update(self, now: float, start: float) -> None:
        s, t = self.summary, self.client.stats
        if self.session is not None:
            st = self.session.stats
            s.frames, s.keyframes, s.idr_keyframes = st.frames, st.keyframes, st.idr_keyframes
            s.datagrams, s.bits, s.refresh_requests = st.datagrams, st.bits, st.refresh_requests
            s.motion_bits, s.acks, s.based = st.motion_bits, st.acks, st.based
            s.redundant, s.copies, s.losses_seen = st.redundant, st.copies, st.losses_seen
        s.dropped_motion = t.dropped_motion
        s.seconds = now - start

    def _report(self, now: float, start: float) -> None:
        self._update(now, start)
        s = self.summary
        window = self.session.uplink_kbps(now) if self.session is not None else 0.0
        s.kbps_windows.append(window)
        if self.report is not None:
            self.report(
                f"t={s.seconds:5.1f} s  frames {s.frames}  uplink {window:6.2f} kbit/s "
                f"(mean {s.kbps:6.2f})  keyframes {s.keyframes}  refresh requests "
                f"{s.refresh_requests}  dropped motion {s.dropped_motion}  skipped {s.skipped}"
            )

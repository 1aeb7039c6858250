"""Video the server publishes: one picture source per sender, fanned out to every receiver.

:class:`ParticipantVideo` holds the newest picture of one sender; each receiver's peer
connection gets its own :class:`SubscriberTrack` (an aiortc video track) from
:meth:`ParticipantVideo.subscribe`. A subscriber always sends the newest picture: a receiver
whose encoder falls behind skips pictures instead of building up delay.

:func:`stamp_index` / :func:`read_stamp` burn a frame index into the top rows of a picture
and read it back after lossy coding (``keyface serve --stamp-frames``): the benchmarks use it
to match what a receiver shows with the sender's capture time, the tests to compare it with
the decoded frame it came from.
"""

from __future__ import annotations

import asyncio
import fractions
import time

import av
import cv2
import numpy as np
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack

from keyface.types import check_image

VIDEO_CLOCK = 90_000
"""RTP clock rate of video (Hz)."""
_TIME_BASE = fractions.Fraction(1, VIDEO_CLOCK)

STAMP_BITS = 16
"""Cells across the stamp strip: a white start marker, 14 index bits (LSB first), a black end
marker."""
STAMP_ROWS = 16
"""Height of the stamp strip (one VP8/H.264 macroblock row, so it survives coding)."""
STAMP_MODULO = 1 << (STAMP_BITS - 2)
_STAMP_MIN_WIDTH = 8 * STAMP_BITS


def stamp_index(image: np.ndarray, index: int) -> np.ndarray:
    """A copy of ``image`` whose top :data:`STAMP_ROWS` rows encode ``index mod 2**14``."""
    check_image(image)
    h, w = image.shape[:2]
    if w < _STAMP_MIN_WIDTH or h < 2 * STAMP_ROWS:
        raise ValueError(f"picture too small to stamp: {w}x{h}")
    out = image.copy()
    cell = w // STAMP_BITS
    value = index % STAMP_MODULO
    bits = [1] + [(value >> b) & 1 for b in range(STAMP_BITS - 2)] + [0]
    for i, bit in enumerate(bits):
        out[:STAMP_ROWS, i * cell : (i + 1) * cell] = 255 if bit else 0
    out[:STAMP_ROWS, STAMP_BITS * cell :] = 0
    return out


def read_stamp(image: np.ndarray) -> int | None:
    """The index :func:`stamp_index` wrote into ``image`` (mod 2**14), or ``None`` when the
    strip does not hold a stamp."""
    h, w = image.shape[:2]
    if w < _STAMP_MIN_WIDTH or h < 2 * STAMP_ROWS:
        return None
    cell = w // STAMP_BITS
    strip = image[3 : STAMP_ROWS - 3].astype(np.float32)
    if strip.ndim == 3:
        strip = strip[..., :3].mean(axis=2)
    levels = [float(strip[:, i * cell + 2 : (i + 1) * cell - 2].mean()) for i in range(STAMP_BITS)]
    if any(40 < v < 215 for v in levels) or levels[0] < 128 or levels[-1] >= 128:
        return None
    return sum(1 << b for b in range(STAMP_BITS - 2) if levels[b + 1] >= 128)


def picture_stats(image: np.ndarray) -> tuple[float, float]:
    """``(mean, standard deviation)`` of all samples of a uint8 picture, as
    ``image.mean()`` / ``image.std()`` give them (to 1e-9), in a pass of OpenCV: 1 ms at
    1280x720 instead of 8 ms. A Python receiver computes them for every picture it gets, on
    the CPU that the sender and the server of a loopback benchmark share."""
    means, stds = cv2.meanStdDev(np.ascontiguousarray(image))  # per channel, equal counts
    mean = float(means.mean())
    var = float(np.mean(stds**2 + means**2)) - mean * mean
    return mean, max(var, 0.0) ** 0.5


def picture_yuv(image: np.ndarray) -> np.ndarray:
    """An even-sized RGB picture as one I420 (yuv420p) plane block, ``(3 h / 2, w)`` uint8,
    BT.601 limited range as swscale makes it (luma within 1 level, chroma averaged 2x2).

    Published pictures are converted once, here, instead of by each receiver's VP8 encoder
    from RGB: at 1280x720 OpenCV takes 1 ms where swscale took 6 ms per receiver
    (``benchmarks/full_frame_live.py``)."""
    check_image(image)
    return cv2.cvtColor(np.ascontiguousarray(image), cv2.COLOR_RGB2YUV_I420)


def even_size(image: np.ndarray) -> np.ndarray:
    """Drop a last odd row / column: 4:2:0 video needs even sizes."""
    h, w = image.shape[:2]
    return image[: h - h % 2, : w - w % 2]


class ParticipantVideo:
    """The newest picture of one sender and the receivers' tracks that show it.

    Used on the event loop only: :meth:`publish` from the code that gets rendered frames,
    ``recv()`` of the subscriber tracks from aiortc's senders.
    """

    def __init__(self, participant: str) -> None:
        self.participant = participant
        self.image: np.ndarray | None = None
        self._yuv: np.ndarray | None = None
        self.index = -1
        """Frame index of :attr:`image` (the sender's numbering)."""
        self.published = 0
        self.closed = False
        self._subscribers: set[SubscriberTrack] = set()

    def publish(self, image: np.ndarray, index: int) -> None:
        if self.closed:
            return
        self.image, self.index = image, index
        self._yuv = None
        self.published += 1
        for track in self._subscribers:
            track._new.set()

    @property
    def yuv(self) -> np.ndarray | None:
        """:attr:`image` as yuv420p (:func:`picture_yuv`), what the tracks send: converted
        once per picture, when the first receiver asks for it."""
        if self._yuv is None and self.image is not None:
            self._yuv = picture_yuv(self.image)
        return self._yuv

    def subscribe(self) -> SubscriberTrack:
        track = SubscriberTrack(self)
        self._subscribers.add(track)
        if self.closed:
            track.stop()
        return track

    def close(self) -> None:
        """The sender is gone: every subscriber track ends."""
        self.closed = True
        for track in list(self._subscribers):
            track.stop()

    def _unsubscribe(self, track: SubscriberTrack) -> None:
        self._subscribers.discard(track)

    @property
    def subscribers(self) -> int:
        return len(self._subscribers)


class SubscriberTrack(MediaStreamTrack):
    """One receiver's view of a :class:`ParticipantVideo` (aiortc video track).

    Timestamps follow the wall clock from the first picture sent, so players show pictures
    at the pace they were rendered.
    """

    kind = "video"

    def __init__(self, source: ParticipantVideo) -> None:
        super().__init__()
        self.source = source
        self._new = asyncio.Event()
        if source.image is not None:
            self._new.set()
        self._start: float | None = None
        self._last_pts = -1
        self.sent = 0

    async def recv(self) -> av.VideoFrame:
        if self.readyState != "live":
            raise MediaStreamError
        await self._new.wait()
        self._new.clear()
        yuv = self.source.yuv
        if self.readyState != "live" or yuv is None:
            raise MediaStreamError
        now = time.monotonic()
        if self._start is None:
            self._start = now
        pts = max(int((now - self._start) * VIDEO_CLOCK), self._last_pts + 1)
        self._last_pts = pts
        frame = av.VideoFrame.from_ndarray(yuv, format="yuv420p")
        frame.pts = pts
        frame.time_base = _TIME_BASE
        self.sent += 1
        return frame

    def stop(self) -> None:
        super().stop()
        self.source._unsubscribe(self)
        self._new.set()  # wake a pending recv(), which then ends the track

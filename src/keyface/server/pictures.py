"""What the server shows of one sender (sans-I/O): its decoder's frames turned into pictures:
the rendered face, stitched into the sender's background (full-frame mode) or replaced by an
animated avatar photo (avatar mode), and the feedback datagrams to send back. No sockets, no
event loop: the WebRTC layer (``keyface.server.conference``) runs these methods on a worker
thread, one job at a time per sender, and tests call them directly."""

from __future__ import annotations

import io
import logging
from collections.abc import Callable
from typing import Any

import numpy as np
from PIL import Image

from keyface.bitstream import BackgroundPacket, BitstreamError, parse_packet
from keyface.codec import limits
from keyface.codec.config import crop_box
from keyface.compose import Composer
from keyface.intra import IntraCodecError, get_intra_codec
from keyface.renderers import get_renderer
from keyface.server.datagram import Datagram
from keyface.server.media import even_size, stamp_index
from keyface.server.receiver import ParticipantDecoder, RenderedFrame

logger = logging.getLogger(__name__)

MAX_AVATAR_PIXELS = 4096 * 4096
AVATAR_FORMATS = ("JPEG", "PNG")
"""The avatar photo formats the server decodes (Pillow's others are refused unread)."""

Picture = tuple[int, np.ndarray, bool]
"""``(frame index, picture, concealed)``."""


class SenderPictures:
    """The pictures of one sender: decoding, full-frame composition, avatar mode."""

    def __init__(
        self, name: str, decoder: ParticipantDecoder, generator: str, stamp_frames: bool = False
    ) -> None:
        self.name = name
        self.decoder = decoder
        self.generator = generator
        self.stamp_frames = stamp_frames
        self._renderer_ready = False  # made on the worker (a generator takes a while to load)
        self.background: np.ndarray | None = None
        self.composer: Composer | None = None
        """Stitches the sender's face into its background (``keyface.compose``), once one came."""
        self._background_packet: BackgroundPacket | None = None
        self.avatar: Any = None
        """The animator of the sender's avatar photo (avatar mode), once the photo and the
        stream header came: an ``AvatarAnimator`` for face-mesh streams, a
        ``FommAvatarAnimator`` for ``fomm`` ones."""
        self._avatar_photo: np.ndarray | None = None
        self._avatar_stream: tuple[str, int] | None = None
        """The stream (motion representation, picture size) the avatar was made for."""

    def decode(
        self,
        receive: Callable[[bytes, float], list[RenderedFrame]] | None,
        payload: bytes,
        now: float,
    ) -> tuple[list[tuple[int, np.ndarray, bool]], list[Datagram]]:
        if not self._renderer_ready:  # one renderer per sender: rendering runs on workers
            self.decoder.renderer = get_renderer(self.generator)
            self._renderer_ready = True
        frames = receive(payload, now) if receive is not None else self.decoder.tick(now)
        if self._background_packet is not None and self.decoder.header is not None:
            self._decode_background(self._background_packet)
        if self._avatar_photo is not None and self.decoder.header is not None:
            header = self.decoder.header
            if self._avatar_stream != (header.motion_name, header.width):
                self._make_avatar()
        pictures = [(f.index, self.picture(f), f.concealed) for f in frames]
        return pictures, self.decoder.datagrams_to_send()

    def take_background(self, payload: bytes) -> None:
        try:
            packet, end = parse_packet(payload)
            if end != len(payload) or not isinstance(packet, BackgroundPacket):
                raise BitstreamError("not one BACKGROUND packet")
        except BitstreamError as exc:
            self.decoder.stats.malformed += 1
            logger.debug("%s: dropped background: %s", self.name, exc)
            return
        self._background_packet = packet
        if self.decoder.header is not None:
            self._decode_background(packet)

    def _decode_background(self, packet: BackgroundPacket) -> None:
        self._background_packet = None
        header = self.decoder.header
        assert header is not None
        crop = header.crop
        try:
            if crop is None:
                raise ValueError("the stream has no crop to paste into a background")
            size = (crop.source_width, crop.source_height)
            if size[0] * size[1] > limits.MAX_SOURCE_PIXELS:
                raise ValueError(f"background of {size[0]}x{size[1]} exceeds the limits")
            codec = get_intra_codec(header.intra_codec)
            image = codec.decode(packet.data, max_pixels=limits.intra_max_pixels(size))
            if image.shape[:2] != (crop.source_height, crop.source_width):
                raise ValueError(
                    f"background is {image.shape[1]}x{image.shape[0]}, the crop's source "
                    f"{crop.source_width}x{crop.source_height}"
                )
        except (IntraCodecError, ValueError) as exc:
            self.decoder.stats.malformed += 1
            logger.info("%s: unusable background: %s", self.name, exc)
            return
        self.background = image
        box = crop_box(crop)
        self.composer = Composer(image, box)

    def take_avatar(self, payload: bytes) -> None:
        """Avatar mode: from now on the sender's motion animates this photo instead of its
        own face (``keyface.compose.avatar``)."""
        try:
            # Only the formats a sender sends (keyface send re-encodes as JPEG): not every
            # decoder Pillow has reaches untrusted bytes.
            with Image.open(io.BytesIO(payload), formats=AVATAR_FORMATS) as img:
                if img.width * img.height > MAX_AVATAR_PIXELS:
                    raise ValueError(f"avatar photo too large ({img.width}x{img.height})")
                photo = np.asarray(img.convert("RGB"))
        except (OSError, ValueError) as exc:
            self.decoder.stats.malformed += 1
            logger.info("%s: unusable avatar photo: %s", self.name, exc)
            return
        self._avatar_photo, self._avatar_stream = photo, None
        if self.decoder.header is not None:
            self._make_avatar()

    def _make_avatar(self) -> None:
        """The animator of the avatar photo for the stream's motion representation (the
        photo may come before the header: it waits for it)."""
        from keyface.face import FaceNotFoundError
        from keyface.fomm import MOTION_NAME

        header = self.decoder.header
        assert header is not None and self._avatar_photo is not None
        photo, self._avatar_stream = self._avatar_photo, (header.motion_name, header.width)
        try:
            if header.motion_name == MOTION_NAME:
                from keyface.compose.fomm_avatar import FommAvatarAnimator

                avatar: Any = FommAvatarAnimator.from_photo(
                    photo, size=256, fps=float(header.fps), sender_size=header.width
                )
            else:
                from keyface.compose.avatar import AvatarAnimator

                # The animator's own renderer (the warp): the room's keyframe enhancer undoes
                # a keyframe codec, and an avatar photo was never coded by one.
                avatar = AvatarAnimator.from_photo(photo, size=256, fps=float(header.fps))
        except (ValueError, ImportError, FaceNotFoundError) as exc:
            self.decoder.stats.malformed += 1
            self._avatar_photo = None
            logger.info("%s: unusable avatar photo: %s", self.name, exc)
            return
        self.avatar = avatar
        logger.info("%s is shown as an avatar", self.name)

    def picture(self, frame: RenderedFrame) -> np.ndarray:
        image = frame.image
        if self.avatar is not None and frame.keypoints is not None:
            animated = self.avatar.animate(frame.keypoints)
            if self.avatar.composer is not None:
                image = self.avatar.full_frame(animated)
            else:
                image = animated.image
        elif self.composer is not None:
            # The face stitched into the background with the body held still (as decode
            # --full-frame does).
            try:
                image = self.composer.compose(image, frame.reference, frame.keypoints)
            except ValueError as exc:
                logger.debug("%s: no full frame: %s", self.name, exc)
        image = even_size(image)
        if self.stamp_frames:
            image = stamp_index(image, frame.index)
        return np.ascontiguousarray(image)

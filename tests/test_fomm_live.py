"""The FOMM route beyond files: a ``fomm`` sender in a room (the server draws it with the
model's generator, whatever the room's renderer), full-frame composition, and avatar mode
with FOMM's relative keypoint motion. Every model is a tiny random one (tests/fomm_utils.py).
"""

from __future__ import annotations

import io
import logging
from pathlib import Path

import numpy as np
import pytest
from fomm_utils import randomised_networks
from PIL import Image

from keyface.bitstream import BackgroundPacket, BitstreamError
from keyface.cli.main import main
from keyface.codec.config import CodecConfig
from keyface.codec.decoder import DecoderCore
from keyface.compose.fomm_avatar import FommAvatarAnimator
from keyface.fomm import MOTION_NAME, forget_model, use_model
from keyface.fomm.model import save_model
from keyface.fomm.motion import join_keypoints, split_keypoints
from keyface.intra import get_intra_codec
from keyface.io import read_frames
from keyface.motion import own_renderer
from keyface.pipeline import cropped_frames
from keyface.renderers import get_renderer
from keyface.server import SenderSession
from keyface.server.pictures import SenderPictures
from keyface.server.receiver import ParticipantDecoder

FPS = 25.0
FRAMES = 8


@pytest.fixture
def model_file(tmp_path: Path):
    path = tmp_path / "tiny-fomm.safetensors"
    save_model(path, randomised_networks())
    use_model(path)
    yield path
    forget_model()


@pytest.fixture(scope="module")
def crops(carphone_analysis) -> list[np.ndarray]:
    a = carphone_analysis
    return [img for _, img in cropped_frames(a.path, a.crop, a.size, FRAMES)]


def _fomm_datagrams(carphone_analysis, crops) -> tuple[SenderSession, list]:
    a = carphone_analysis
    config = CodecConfig(size=a.size, motion=MOTION_NAME, generator=MOTION_NAME)
    sender = SenderSession(config, a.fps, crop=a.crop)
    datagrams = [
        sender.push_frame(img, lm, i / FPS)
        for i, (img, lm) in enumerate(zip(crops, a.landmarks, strict=False))
    ]
    return sender, datagrams


def _show(pictures: SenderPictures, datagrams: list) -> list[tuple[int, np.ndarray, bool]]:
    shown = []
    for i, frame in enumerate(datagrams):
        for d in frame:
            out, _ = pictures.decode(pictures.decoder.receive, d.payload, i / FPS)
            shown += out
    return shown


# -- the representation brings its renderer -----------------------------------------------------
def test_a_fomm_stream_is_drawn_by_its_models_generator(model_file, carphone_analysis, crops):
    """The room renders with the warp, but a ``fomm`` sender's keypoints mean nothing to it:
    the server draws that sender with the model's generator, and pastes it into its full
    frame (no body hold: that needs the face mesh's oval)."""
    assert own_renderer(MOTION_NAME) == MOTION_NAME and own_renderer("facemesh-pca") is None
    sender, datagrams = _fomm_datagrams(carphone_analysis, crops)
    source = next(iter(read_frames(carphone_analysis.path, 1))).image
    packet = BackgroundPacket(
        frame_index=0, data=get_intra_codec(sender.header.intra_codec).encode(source, 60)
    )
    pictures = SenderPictures("alice", ParticipantDecoder("alice"), "warp")
    pictures.take_background(bytes(packet))
    shown = _show(pictures, datagrams)
    assert pictures.decoder.decoder is not None
    assert pictures.decoder.decoder.renderer.name == MOTION_NAME
    assert [index for index, _, _ in shown] == list(range(FRAMES))
    assert not any(concealed for _, _, concealed in shown)
    assert pictures.composer is not None
    x0, y0, x1, y1 = pictures.composer.region
    h, w = source.shape[:2]
    for _, image, _ in shown:
        assert image.shape[:2] == (h - h % 2, w - w % 2)
    # Outside the face box the picture is the decoded background exactly.
    image = shown[-1][1]
    outside = np.ones(image.shape[:2], bool)
    outside[y0:y1, x0:x1] = False
    background = pictures.background
    assert background is not None and outside.sum() > 1000
    np.testing.assert_array_equal(
        image[outside], background[: image.shape[0], : image.shape[1]][outside]
    )


def test_a_room_without_the_model_refuses_the_stream_and_says_why(
    model_file, carphone_analysis, crops, caplog
):
    _, datagrams = _fomm_datagrams(carphone_analysis, crops)
    forget_model()
    pictures = SenderPictures("bob", ParticipantDecoder("bob"), "warp")
    with caplog.at_level(logging.INFO, logger="keyface.server.receiver"):
        shown = _show(pictures, datagrams[:1])
    assert shown == [] and pictures.decoder.header is None
    assert pictures.decoder.stats.malformed >= 1
    assert "unknown motion representation 'fomm'" in caplog.text


def test_a_fomm_stream_refuses_another_renderer(model_file, carphone_analysis, crops) -> None:
    sender, _ = _fomm_datagrams(carphone_analysis, crops[:1])
    with pytest.raises(BitstreamError, match="drawn by its own renderer 'fomm', not 'warp'"):
        DecoderCore(sender.header, renderer=get_renderer("warp"))
    assert DecoderCore(sender.header).renderer.name == MOTION_NAME


# -- avatar mode ----------------------------------------------------------------------------------
def _avatar(**kwargs) -> FommAvatarAnimator:
    rng = np.random.default_rng(3)
    image = (rng.random((128, 128, 3)) * 255).astype(np.uint8)
    image = np.asarray(Image.fromarray(image).resize((256, 256), Image.BILINEAR))
    return FommAvatarAnimator(image, **kwargs)


def _sender(avatar: FommAvatarAnimator, size: int) -> tuple[np.ndarray, np.ndarray]:
    """The avatar's own keypoints as a sender's in a ``size`` crop: positions, Jacobians."""
    pos, jac = split_keypoints(avatar.keypoints, avatar.size)
    return pos * (size / avatar.size), jac


def test_avatar_transfers_relative_motion_in_the_avatars_scale(model_file) -> None:
    avatar = _avatar(rebase_s=None, threshold=10.0, sender_size=512)  # gate: next test
    pos_a, jac_a = split_keypoints(avatar.keypoints, 256)
    # A sender crop of 512 whose face is the avatar's seen twice as large: scale 1.
    pos, jac = _sender(avatar, 512)
    first = avatar.animate(join_keypoints(pos, jac, 512))
    assert first.distance == pytest.approx(0.0, abs=1e-6) and not first.gated
    np.testing.assert_allclose(first.keypoints, avatar.keypoints, atol=1e-3)
    # 20 px in the 512 crop are 10 px of a 256 crop; the Jacobians' change is carried over.
    angle = np.deg2rad(8.0)
    rot = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    moved = avatar.animate(join_keypoints(pos + np.array([20.0, 0.0]), rot @ jac, 512))
    pos_t, jac_t = split_keypoints(moved.keypoints, 256)
    np.testing.assert_allclose(pos_t - pos_a, np.tile([10.0, 0.0], (len(pos_a), 1)), atol=1e-3)
    np.testing.assert_allclose(jac_t, rot @ jac_a, atol=1e-3)
    assert not moved.gated and moved.image.shape == (256, 256, 3)
    # A sender face half the avatar's size moves the avatar twice as far.
    small = _avatar(rebase_s=None, threshold=10.0)
    half, jac = _sender(small, 128)
    small.animate(join_keypoints(half, jac, 256))
    step = small.transfer(join_keypoints(half + np.array([4.0, 0.0]), jac, 256))
    np.testing.assert_allclose(
        split_keypoints(step, 256)[0] - pos_a, [[8.0, 0.0]] * len(pos_a), atol=1e-3
    )


def test_avatar_gate_glides_to_rest_and_rebases(model_file) -> None:
    avatar = _avatar(transition_frames=4, fps=10.0, rebase_s=1.0)
    pos, jac = _sender(avatar, 256)
    avatar.animate(join_keypoints(pos, jac, 256))
    far = join_keypoints(pos + np.array([60.0, 30.0]), jac, 256)
    frames = [avatar.animate(far) for _ in range(9)]
    assert frames[0].distance > avatar.threshold and all(f.gated for f in frames)
    shares = [f.fallback for f in frames]
    assert shares[:4] == sorted(shares[:4]) and shares[3] == pytest.approx(1.0)
    # Fully at rest: the avatar's own keypoints.
    np.testing.assert_allclose(frames[5].keypoints, avatar.keypoints, atol=1e-4)
    # Gated for rebase_s seconds (10 frames): the sender's pose there becomes the new start.
    rebased = avatar.animate(far)
    assert rebased.rebased and not rebased.gated
    assert rebased.distance == pytest.approx(0.0, abs=1e-6)
    # No keypoints: gated too.
    assert avatar.animate(None).gated


def test_avatar_bad_inputs(model_file) -> None:
    with pytest.raises(ValueError, match="square"):
        FommAvatarAnimator(np.zeros((64, 32, 3), np.uint8))
    avatar = _avatar()
    with pytest.raises(ValueError, match="sender keypoints must be"):
        avatar.animate(np.zeros((5, 2), np.float32))
    with pytest.raises(ValueError, match="from_photo"):
        avatar.full_frame(avatar.animate(avatar.keypoints))


def test_the_server_animates_an_avatar_with_fomm_keypoints(
    model_file, carphone_analysis, crops
) -> None:
    """The photo may come before the stream header: the server waits for the header to
    know which animator the photo needs."""
    _, datagrams = _fomm_datagrams(carphone_analysis, crops)
    photo = next(iter(read_frames(carphone_analysis.path, 1))).image
    photo = np.ascontiguousarray(photo[:, ::-1])  # someone else: the clip mirrored
    jpeg = io.BytesIO()
    Image.fromarray(photo).save(jpeg, format="JPEG", quality=95)
    pictures = SenderPictures("carol", ParticipantDecoder("carol"), "warp")
    pictures.take_avatar(jpeg.getvalue())
    assert pictures.avatar is None
    shown = _show(pictures, datagrams)
    assert isinstance(pictures.avatar, FommAvatarAnimator)
    assert len(shown) == FRAMES
    h, w = photo.shape[:2]
    for _, image, _ in shown:
        assert image.shape[:2] == (h - h % 2, w - w % 2)


# -- the command line ---------------------------------------------------------------------------
def test_send_and_serve_check_their_fomm_options(model_file, tmp_path, capsys) -> None:
    clip = tmp_path / "x.mp4"
    clip.write_bytes(b"")
    base = ["send", "--input", str(clip), "--server", "http://127.0.0.1:9", "--room", "r"]
    base += ["--token", "t"]
    assert main([*base, "--motion", "fomm"]) == 2
    assert "--motion fomm needs its model file" in capsys.readouterr().err
    assert main([*base, "--model", str(model_file)]) == 2
    assert "--model is the model file of --motion fomm" in capsys.readouterr().err
    serve = ["serve", "--secret", "s" * 16, "--relay", "--model", str(model_file)]
    assert main(serve) == 2
    assert "the browser has no FOMM" in capsys.readouterr().err

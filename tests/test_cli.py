"""The command line, end to end on the carphone clip: what a user types, what they get back."""

from __future__ import annotations

import json
import subprocess
import sys
from fractions import Fraction
from pathlib import Path

import pytest

from keyface.cli.main import main
from keyface.io import probe

FRAMES = 24


@pytest.fixture(scope="module")
def stream(tmp_path_factory, carphone_path: Path) -> Path:
    out = tmp_path_factory.mktemp("cli") / "carphone.kf"
    code = main(
        ["encode", str(carphone_path), "-o", str(out), "--max-frames", str(FRAMES),
         "--full-frame", "-q"]
    )  # fmt: skip
    assert code == 0
    return out


def test_encode_decode_round_trip(stream: Path, tmp_path: Path) -> None:
    out = tmp_path / "decoded.mp4"
    assert main(["decode", str(stream), "-o", str(out), "-q"]) == 0
    info = probe(out)
    assert (info.width, info.height) == (256, 256)
    assert info.fps == Fraction(30000, 1001)
    assert info.frame_count == FRAMES


def test_full_frame_decode_restores_the_source_size(stream: Path, tmp_path: Path) -> None:
    out = tmp_path / "full.y4m"
    assert main(["decode", str(stream), "-o", str(out), "--full-frame", "-q"]) == 0
    info = probe(out)
    assert (info.width, info.height) == (176, 144)


def test_info_reports_the_parts(stream: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["info", str(stream), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["frames"] == FRAMES and info["complete"]
    parts = info["parts"]
    assert parts["keyframe"]["packets"] >= 1 and parts["motion"]["bytes"] > 0
    assert sum(p["bytes"] for p in parts.values()) + info["header_bytes"] == info["bytes"]
    assert info["motion_bits_per_frame"] < 120
    assert info["motion"].startswith("facemesh-pca-field v1")  # the body-motion field, default


def test_no_motion_field_writes_face_motion_only(
    carphone_path: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "face_only.kf"
    args = ["encode", str(carphone_path), "-o", str(out), "--max-frames", "8", "-q"]
    assert main([*args, "--no-motion-field"]) == 0
    assert main(["info", str(out), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["motion"].startswith("facemesh-pca v1")


def test_crop_command(carphone_path: Path, tmp_path: Path) -> None:
    out = tmp_path / "crop.mp4"
    assert main(["crop", str(carphone_path), "-o", str(out), "--max-frames", "5", "-q"]) == 0
    info = probe(out)
    assert (info.width, info.height, info.frame_count) == (256, 256, 5)


def test_no_crop_codes_a_crop_frame_for_frame(tmp_path: Path, carphone_path: Path) -> None:
    crop = tmp_path / "crop.mp4"
    assert main(["crop", str(carphone_path), "-o", str(crop), "--max-frames", "10", "-q"]) == 0
    kf, dec = tmp_path / "c.kf", tmp_path / "c.mp4"
    assert main(["encode", str(crop), "--no-crop", "-o", str(kf), "-q"]) == 0
    assert main(["decode", str(kf), "-o", str(dec), "-q"]) == 0
    assert probe(dec).frame_count == 10 and probe(dec).width == 256


def test_demo_writes_side_by_side(tmp_path: Path, carphone_path: Path) -> None:
    out = tmp_path / "demo.mp4"
    args = ["demo", "--input", str(carphone_path), "--max-frames", "12", "-o", str(out), "-q"]
    assert main(args) == 0
    info = probe(out)
    assert (info.width, info.height, info.frame_count) == (512, 256, 12)


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["decode", "nowhere.kf", "-o", "x.mp4"], "no such file"),
        (["info", "{carphone}"], "not a keyface stream"),
        (["encode", "{carphone}", "--no-crop", "-o", "x.kf"], "square"),
        (["decode", "{truncated}", "-o", "{tmp}/t.mp4"], "truncated"),
        (["encode", "{noise}", "-o", "x.kf"], "no face"),
        (["decode", "{truncated}", "-o", "{tmp}/g.mp4", "--generator", "x"], "unknown generator"),
    ],
)
def test_errors_are_one_line_with_exit_code_2(
    argv: list[str],
    message: str,
    tmp_path: Path,
    carphone_path: Path,
    stream: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    truncated = tmp_path / "cut.kf"
    truncated.write_bytes(stream.read_bytes()[: stream.stat().st_size * 2 // 3])
    noise = tmp_path / "noise.mp4"
    _write_noise(noise)
    subs = {"carphone": carphone_path, "truncated": truncated, "tmp": tmp_path, "noise": noise}
    argv = [a.format(**subs) for a in argv]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0].lower(), err


def test_truncated_stream_still_writes_the_frames_before_the_cut(
    stream: Path, tmp_path: Path
) -> None:
    cut = tmp_path / "cut.kf"
    cut.write_bytes(stream.read_bytes()[:-20])  # inside the last MOTION packet
    out = tmp_path / "partial.mp4"
    assert main(["decode", str(cut), "-o", str(out), "-q"]) == 2
    assert 0 < probe(out).frame_count < FRAMES


@pytest.mark.slow
def test_no_traceback_from_the_installed_command(tmp_path: Path) -> None:
    bad = tmp_path / "bad.kf"
    bad.write_bytes(b"KFAC\x07garbage")
    proc = subprocess.run(
        [sys.executable, "-m", "keyface", "decode", str(bad), "-o", str(tmp_path / "x.mp4")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    assert "version 7" in proc.stderr


def _write_noise(path: Path) -> None:
    import numpy as np

    from keyface.io import VideoWriter

    rng = np.random.default_rng(0)
    with VideoWriter(path, 25) as w:
        for _ in range(6):
            w.write(rng.integers(0, 256, (96, 128, 3), dtype=np.uint8))


def test_encode_group_content_sets_the_groups_content_rule() -> None:
    """``--group-content`` names :attr:`CodecConfig.group_cut`. The one ladder's groups cut
    on eyes and mouth (``--quality medium`` is a group rung); ``--mode bidirectional`` alone
    leaves the rule off, as the paper does; ``off`` switches it off anywhere."""
    from keyface.cli.encode import config_from_args
    from keyface.cli.main import build_parser

    def parse(*extra: str):
        args = build_parser().parse_args(["encode", "in.mp4", "-o", "out.kf", *extra])
        return config_from_args(args)

    assert parse().mode == "bidirectional" and parse().group_cut == ("eyes", "mouth")
    assert parse("--mode", "bidirectional").group_cut is None
    assert parse("--group-content", "off").group_cut is None
    assert parse("--group-content", "choice").group_cut == ()
    assert parse("--group-content", "eyes+mouth").group_cut == ("eyes", "mouth")
    with pytest.raises(SystemExit):
        parse("--group-content", "ears")


def test_encode_max_interval_and_gaze_set_their_fields() -> None:
    """``--max-interval N``: a keyframe at least every N frames on top of the refresh rule
    (:attr:`CodecConfig.max_interval`); the fixed refresh has its own interval. ``--gaze``
    names :attr:`CodecConfig.gaze_rule` (``choose`` unless given)."""
    from keyface.cli.encode import config_from_args
    from keyface.cli.main import build_parser

    def parse(*extra: str):
        args = build_parser().parse_args(["encode", "in.mp4", "-o", "out.kf", *extra])
        return config_from_args(args)

    assert parse("--mode", "animation").max_interval == 0
    assert parse().gaze_rule == "choose" and parse("--gaze", "refresh").gaze_rule == "refresh"
    config = parse("--mode", "animation", "--max-interval", "12")
    assert config.max_interval == 12 and config.refresh_mode.name == "MOTION"


def test_encode_content_turns_the_landmark_rule_on() -> None:
    """Streams whose keypoints name no mouth or eyes (FOMM) are judged on the landmarks only
    when ``--content`` asks for the rule (off by default: docs/motion.md); ``off`` leaves it
    off. The face-mesh route ignores the field (its keypoints carry the state)."""
    from keyface.cli.encode import config_from_args
    from keyface.cli.main import build_parser

    def parse(*extra: str):
        args = build_parser().parse_args(["encode", "in.mp4", "-o", "out.kf", *extra])
        return config_from_args(args)

    assert not parse().landmark_content
    assert parse("--content", "keyframe").landmark_content
    assert parse("--content", "detail").landmark_content
    assert not parse("--content", "off").landmark_content

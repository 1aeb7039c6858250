"""What a new user hits (issue 17) and output safety (issue 14, item 4): one crop decision for
crop / encode / bench / the live sender, arguments and output paths checked before any work,
outputs that never replace an input nor appear half-written, progress only on a terminal,
clean exits on closed pipes, the decoder streaming to the file, the eval default set."""

from __future__ import annotations

import io
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from keyface.cli.main import main
from keyface.face import ALREADY_CROPPED, plan_crop, settle_crop
from keyface.imageops import psnr
from keyface.io import VideoWriter, read_frames
from keyface.pipeline import analyze, crop_video
from keyface.types import CropBox

FRAMES = 10


@pytest.fixture(scope="module")
def videos(tmp_path_factory: pytest.TempPathFactory, carphone_path: Path) -> dict[str, Path]:
    """Three inputs: carphone (176x144), its 256x256 face crop (a square input that already
    is a face crop: ``crop`` made it) and carphone in the middle of a 320x320 black square (a
    square input with a small face)."""
    root = tmp_path_factory.mktemp("user")
    tight = root / "tight.y4m"
    crop_video(carphone_path, tight, size=256, max_frames=FRAMES)
    loose = root / "loose.y4m"
    with VideoWriter(loose, 25) as writer:
        for frame in read_frames(carphone_path, FRAMES):
            canvas = np.zeros((320, 320, 3), np.uint8)
            canvas[88:232, 72:248] = frame.image
            writer.write(canvas)
    return {"carphone": carphone_path, "tight": tight, "loose": loose}


# --- 1. one crop decision --------------------------------------------------------------------


def test_settle_crop_uses_a_square_face_crop_whole() -> None:
    tight = CropBox(128.0, 128.0, 0.95 * 256 / ALREADY_CROPPED, 256, 256)
    assert settle_crop(tight) == CropBox.full(256, 256)
    small = CropBox(128.0, 128.0, 100.0, 256, 256)
    assert settle_crop(small) == small
    wide = CropBox(128.0, 72.0, 300.0, 256, 144)  # not square: never used whole
    assert settle_crop(wide) == wide


@pytest.mark.parametrize("name", ["carphone", "tight", "loose"])
def test_crop_output_is_what_encode_sees(
    name: str, videos: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``keyface crop`` writes the pictures that ``encode`` of the original codes and that
    ``encode --no-crop`` of the crop codes (up to the 4:2:0 of the .y4m file)."""
    source = videos[name]
    out = tmp_path / "crop.y4m"
    assert main(["crop", str(source), "-o", str(out), "--max-frames", str(FRAMES)]) == 0
    assert "side" in capsys.readouterr().err
    encoded = analyze(source, size=256, max_frames=FRAMES)  # what `encode` codes
    assert encoded.crop == plan_crop(read_frames(source, FRAMES))
    if name == "tight":
        assert encoded.crop == CropBox.full(256, 256)
    if name == "loose":
        assert encoded.crop is not None and encoded.crop.side < 200
    as_crop = analyze(out, crop=False)  # what `encode --no-crop` of the crop codes
    assert encoded.crops is not None and as_crop.crops is not None
    assert len(as_crop.crops) == len(encoded.crops) == FRAMES
    # The 480x480 clip of issue 17 was cropped 592 px wide by `crop` and 480 by `encode`:
    # PSNR 16 dB between the two. Same crop, only chroma subsampling apart: above 38 dB.
    worst = min(psnr(a, b) for a, b in zip(as_crop.crops, encoded.crops, strict=True))
    assert worst > 38.0, worst


# --- 2. arguments and output paths before any work --------------------------------------------


@pytest.fixture()
def no_work(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fail the test if a command starts analysing, cropping or decoding."""

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("work started before the arguments were checked")

    for target in (
        "keyface.cli.encode.analyze",
        "keyface.cli.crop.crop_video",
        "keyface.cli.decode.StreamDecoder",
    ):
        monkeypatch.setattr(target, refuse)


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["encode", "{video}", "-o", "/nonexistent/x.kf"], "folder /nonexistent does not exist"),
        (["decode", "{stream}", "-o", "/nonexistent/x.mp4"], "folder /nonexistent does not exist"),
        (["crop", "{video}", "-o", "/nonexistent/x.mp4"], "folder /nonexistent does not exist"),
        (["encode", "{video}", "-o", "{file}/x.kf"], "is not a folder"),
        (["decode", "{stream}", "-o", "{file}/x.mp4"], "is not a folder"),
        (["encode", "{video}", "-o", "{tmp}"], "is a folder"),
        (["encode", "{video}", "-o", "{video}"], "is an input"),
        (["encode", "{video}", "-o", "{video}", "-y"], "is an input"),
        (["decode", "{stream}", "-o", "{stream}", "-y"], "is an input"),
        (["crop", "{video}", "-o", "{video}", "--force"], "is an input"),
        (["encode", "{video}", "-o", "{file}"], "exists; pass --force (-y)"),
        (["decode", "{stream}", "-o", "{tmp}/x.avi"], ".mp4, .mkv, .mov or .y4m"),
        (["encode", "{video}", "-o", "{tmp}/x.mp4"], "must end in .kf"),
        (["encode", "{video}", "-o", "{tmp}/x.kf", "--kbps", "0"], "--kbps: must be a positive"),
        (["encode", "{video}", "-o", "{tmp}/x.kf", "--kbps", "-3"], "--kbps: must be a positive"),
        (["encode", "{video}", "-o", "{tmp}/x.kf", "--max-frames", "0"], "at least 1"),
        (["encode", "{video}", "-o", "{tmp}/x.kf", "--chunk", "x"], "whole number"),
        (["encode", "{video}", "-o", "{tmp}/x.kf", "--keyframe-quality", "101"], "quality"),
        (
            ["encode", "{video}", "-o", "{tmp}/x.kf", "--kbps", "9", "--keyframe-quality", "30"],
            "--kbps chooses the keyframe quality",
        ),
        (
            ["encode", "{video}", "-o", "{tmp}/x.kf", "--psnr-floor", "20"],
            "--psnr-floor is the floor of --psnr-check N",
        ),
        (
            ["encode", "{video}", "-o", "{tmp}/x.kf", "--refresh", "fixed", "--max-interval", "9"],
            "--max-interval is for --refresh psnr or motion",
        ),
        (["crop", "{video}", "-o", "{tmp}/x.mp4", "--max-frames", "-1"], "at least 1"),
        (["eval", "{video}", "{tmp}/missing.mp4"], "no such file"),
    ],
)
def test_bad_arguments_fail_in_one_line_before_any_work(
    argv: list[str],
    message: str,
    tmp_path: Path,
    videos: dict[str, Path],
    capsys: pytest.CaptureFixture[str],
    no_work: None,
) -> None:
    stream = tmp_path / "in.kf"
    stream.write_bytes(b"KFAC")
    file = tmp_path / "existing.kf"
    file.write_bytes(b"keep me")
    video = tmp_path / "in.y4m"
    video.write_bytes(videos["tight"].read_bytes())
    subs = {"video": video, "stream": stream, "file": file, "tmp": tmp_path}
    argv = [a.format(**subs) for a in argv]
    try:
        code = main(argv)
    except SystemExit as exc:  # argparse's own errors
        code = exc.code
    assert code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0], err
    assert not Path("/nonexistent").exists()  # no folder is ever created
    assert file.read_bytes() == b"keep me"
    assert video.read_bytes() == videos["tight"].read_bytes()
    assert stream.read_bytes() == b"KFAC"


def test_output_is_replaced_only_with_force_and_only_when_finished(
    videos: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "t.kf"
    args = ["encode", str(videos["tight"]), "--no-crop", "-o", str(out), "-q", "--max-frames", "4"]
    assert main(args) == 0
    first = out.read_bytes()
    assert main([*args, "--quality", "best"]) == 2  # exists: refused
    assert out.read_bytes() == first
    assert main([*args, "--quality", "best", "-y"]) == 0
    assert out.read_bytes() != first

    # An interrupted decode leaves neither a truncated file nor a temporary one behind.
    import keyface.pipeline as pipeline

    real_write = VideoWriter.write

    def write_then_interrupt(self: VideoWriter, image: np.ndarray) -> None:
        real_write(self, image)
        if self.frames_written == 2:
            raise KeyboardInterrupt

    monkeypatch.setattr(pipeline.VideoWriter, "write", write_then_interrupt)
    decoded = tmp_path / "d.mp4"
    assert main(["decode", str(out), "-o", str(decoded), "-q"]) == 130
    assert sorted(p.name for p in tmp_path.iterdir()) == ["t.kf"]


def test_decode_keeps_the_frames_before_damage_under_the_final_name(
    videos: dict[str, Path], tmp_path: Path
) -> None:
    kf = tmp_path / "t.kf"
    args = ["encode", str(videos["tight"]), "--no-crop", "-o", str(kf), "-q", "--chunk", "1"]
    assert main(args) == 0
    cut = tmp_path / "cut.kf"
    cut.write_bytes(kf.read_bytes()[:-30])
    out = tmp_path / "partial.y4m"
    assert main(["decode", str(cut), "-o", str(out), "-q"]) == 2
    assert 0 < len(list(read_frames(out))) < FRAMES
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cut.kf", "partial.y4m", "t.kf"]


# --- issue 14.1: decoding streams to the writer --------------------------------------------------


def test_decode_streams_frames_to_the_writer(
    videos: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each frame is written as soon as its packet is decoded: when frame ``i`` is written
    the decoder is at most one motion packet (``--chunk`` frames) ahead."""
    import keyface.pipeline as pipeline

    kf = tmp_path / "t.kf"
    args = ["encode", str(videos["tight"]), "--no-crop", "-o", str(kf), "-q", "--chunk", "2"]
    assert main(args) == 0
    ahead: list[int] = []
    stream = pipeline.StreamDecoder(kf.read_bytes())
    real_write = VideoWriter.write

    def record(self: VideoWriter, image: np.ndarray) -> None:
        ahead.append(stream.frames - self.frames_written)
        real_write(self, image)

    monkeypatch.setattr(pipeline.VideoWriter, "write", record)
    summary = pipeline.decode_to_file(stream, tmp_path / "d.y4m")
    assert summary.frames == FRAMES and summary.complete and summary.error is None
    assert len(ahead) == FRAMES and max(ahead) <= 2, ahead


# --- 3. progress and pipes -------------------------------------------------------------------


def test_progress_bars_only_on_a_terminal(
    videos: dict[str, Path],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    args = ["encode", str(videos["tight"]), "--no-crop", "--max-frames", "6"]
    assert main([*args, "-o", str(tmp_path / "a.kf")]) == 0
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "\r" not in err and "6 frames" in err  # the summary only

    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    terminal = Terminal()
    monkeypatch.setattr(sys, "stderr", terminal)
    assert main([*args, "-o", str(tmp_path / "b.kf")]) == 0
    shown = terminal.getvalue()
    assert "analyse:" in shown and "encode:" in shown and "/6 [" in shown  # with totals
    assert main([*args, "-o", str(tmp_path / "c.kf"), "--kbps", "30"]) == 0
    assert "rate trial 2 (of at most" in terminal.getvalue()
    crop = ["crop", str(videos["carphone"]), "-o", str(tmp_path / "c.y4m"), "--max-frames", "6"]
    assert main(crop) == 0
    shown = terminal.getvalue()
    assert "find face:" in shown and "crop:" in shown and "/6 [" in shown  # both passes


@pytest.mark.slow
def test_a_closed_pipe_ends_quietly(videos: dict[str, Path]) -> None:
    """``keyface eval ... | head -1``: no BrokenPipeError traceback, SIGPIPE's exit status."""
    ref = str(videos["tight"])
    proc = subprocess.Popen(
        [sys.executable, "-m", "keyface", "eval", ref, ref, "--metrics", "psnr", "--per-frame"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert proc.stdout is not None and proc.stderr is not None
    proc.stdout.close()  # the reader is gone before anything is written
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=120) == 141
    assert "Traceback" not in err and "BrokenPipe" not in err, err


# --- 4. the eval default set -----------------------------------------------------------------


def test_eval_default_set_and_help(capsys: pytest.CaptureFixture[str]) -> None:
    from keyface.eval.registry import (
        DEFAULT_EVAL_METRICS,
        METRIC_REGISTRY,
        SECONDS_PER_FRAME,
        resolve_eval_metrics,
    )

    assert resolve_eval_metrics(None) == resolve_eval_metrics("default")
    assert set(resolve_eval_metrics(None)) == set(DEFAULT_EVAL_METRICS)
    assert "lpips_vgg" not in DEFAULT_EVAL_METRICS and "aed" not in DEFAULT_EVAL_METRICS
    assert resolve_eval_metrics("default,lpips_vgg")[-1] != "default"
    assert set(SECONDS_PER_FRAME) == set(METRIC_REGISTRY.names())
    with pytest.raises(SystemExit):
        main(["eval", "--help"])
    text = capsys.readouterr().out
    for name in METRIC_REGISTRY.names():
        line = next(row for row in text.splitlines() if f" {name} " in row)
        assert " ms " in line, line
        assert line.lstrip().startswith("*") == (name in DEFAULT_EVAL_METRICS), line


def test_slow_metrics_on_sampled_frames() -> None:
    from keyface.eval import compute_metrics

    rng = np.random.default_rng(0)
    ref = [rng.integers(0, 256, (64, 64, 3), dtype=np.uint8) for _ in range(5)]
    dist = [np.clip(r.astype(int) + 20, 0, 255).astype(np.uint8) for r in ref]
    r = compute_metrics(ref, dist, ["psnr", "dists"], slow_every=2)
    assert all(np.isfinite(r.per_frame["psnr"]))
    measured = [not np.isnan(v) for v in r.per_frame["dists"]]
    assert measured == [True, False, True, False, True]
    assert "1 frame in 2 (3 of 5 frames)" in r.notes["dists"]
    assert r.mean["dists"] == pytest.approx(np.mean(r.per_frame["dists"][::2]))


# --- the README flow gives the bench's numbers -------------------------------------------------


@pytest.mark.slow
def test_readme_flow_matches_the_bench_protocol(
    carphone_path: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """crop -> encode --no-crop -> decode -> eval (README, "Measuring it") against the bench
    protocol (crop.y4m, coded with --no-crop, metrics against crop.y4m) on the same clip and
    operating point: the same crop, the same stream, the same numbers (up to the decoded
    video's 4:2:0)."""
    from keyface.codec.config import CodecConfig
    from keyface.codec.ratecontrol import QUALITY_PRESETS, config_at
    from keyface.eval import compute_metrics
    from keyface.eval.bench.records import PrepareTask
    from keyface.eval.bench.worker import load_analysis, prepare_clip
    from keyface.pipeline import decode_bytes, encode_analysis
    from keyface.renderers import DEFAULT_RENDERER, get_renderer

    n = 24
    crop, kf, dec = tmp_path / "crop.y4m", tmp_path / "t.kf", tmp_path / "dec.y4m"
    assert main(["crop", str(carphone_path), "-o", str(crop), "--max-frames", str(n), "-q"]) == 0
    assert main(["encode", str(crop), "--no-crop", "-o", str(kf), "-q"]) == 0
    assert main(["decode", str(kf), "-o", str(dec), "-q"]) == 0
    capsys.readouterr()
    assert main(["eval", str(crop), str(dec), "--metrics", "psnr,lpips_alex", "--json"]) == 0
    readme = json.loads(capsys.readouterr().out)["mean"]

    bench_dir = tmp_path / "bench"
    meta = prepare_clip(PrepareTask(clip="c", path=str(carphone_path), dir=str(bench_dir),
                                    frames=n, size=256, force=False))  # fmt: skip
    assert (bench_dir / "crop.y4m").read_bytes() == crop.read_bytes()  # the same reference
    analysis = load_analysis(bench_dir, meta)
    ladder = CodecConfig(mode="auto")  # the one ladder over the modes, as encode and bench use
    coded = encode_analysis(analysis, config_at(QUALITY_PRESETS["medium"], ladder))
    assert coded.data == kf.read_bytes()  # the same stream
    renderer = get_renderer(DEFAULT_RENDERER)
    out = [f.image for f in decode_bytes(coded.data, renderer=renderer).frames]
    ref = [f.image for f in read_frames(bench_dir / "crop.y4m")]
    bench = compute_metrics(ref, out, ["psnr", "lpips_alex"]).mean
    assert readme["psnr"] == pytest.approx(bench["psnr"], abs=0.3)
    assert readme["lpips_alex"] == pytest.approx(bench["lpips_alex"], abs=0.005)

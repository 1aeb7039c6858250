"""``keyface bench``: Bjøntegaard deltas, metric orientation, clip selection, a tiny end-to-end
run on the carphone clip and its cache."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from keyface.cli.main import main
from keyface.clips import ClipSelectionError, select_clips
from keyface.eval.bdrate import (
    bd_quality,
    bd_rate,
    inversion,
    oriented,
    rate_at_quality,
    rd_front,
)
from keyface.eval.bench import (
    BenchError,
    parse_qps,
    parse_u,
)

RATES = [10.0, 20.0, 40.0, 80.0]
PSNR = [30.0, 33.0, 36.0, 39.0]
LPIPS = [0.40, 0.30, 0.20, 0.10]


# --------------------------------------------------------------------------------------------
# BD-rate / BD-quality


def test_identical_curves_give_zero() -> None:
    assert bd_rate(RATES, PSNR, RATES, PSNR).value == pytest.approx(0.0, abs=1e-9)
    assert bd_quality(RATES, PSNR, RATES, PSNR).value == pytest.approx(0.0, abs=1e-9)


def test_half_the_rate_is_minus_fifty_percent() -> None:
    half = [r / 2 for r in RATES]
    res = bd_rate(RATES, PSNR, half, PSNR)
    assert res.value == pytest.approx(-50.0, abs=1e-6)
    assert res.reason is None and res.overlap == pytest.approx(1.0)
    # ... and twice the rate is +100 %
    assert bd_rate(RATES, PSNR, [2 * r for r in RATES], PSNR).value == pytest.approx(100.0)


def test_bd_quality_of_a_shifted_curve() -> None:
    better = [q + 1.5 for q in PSNR]
    assert bd_quality(RATES, PSNR, RATES, better).value == pytest.approx(1.5)
    assert bd_rate(RATES, PSNR, RATES, better).value < 0


def test_non_overlapping_curves_give_none_with_reason() -> None:
    res = bd_rate(RATES, PSNR, RATES, [50.0, 51.0, 52.0, 53.0])
    assert res.value is None and "no quality overlap" in (res.reason or "")
    res = bd_quality([1.0, 2.0], [1.0, 2.0], [10.0, 20.0], [1.0, 2.0])
    assert res.value is None and "no rate overlap" in (res.reason or "")
    assert res.to_json()["value"] is None


def test_too_few_points_give_none_with_reason() -> None:
    res = bd_rate(RATES, PSNR, [5.0], [31.0])
    assert res.value is None and "test curve has 1 usable" in (res.reason or "")
    res = bd_rate([10.0, 20.0], [float("nan"), 30.0], RATES, PSNR)
    assert res.value is None and "anchor curve" in (res.reason or "")


def test_rd_front_drops_dominated_and_bad_points() -> None:
    r, q = rd_front([10, 20, 30, 40, 50, -1], [1.0, 3.0, 2.0, 4.0, float("nan"), 9.0])
    assert r.tolist() == [10, 20, 40] and q.tolist() == [1.0, 3.0, 4.0]


# --------------------------------------------------------------------------------------------
# lower-is-better metrics


def test_inversions() -> None:
    assert inversion("psnr") == "x" and inversion("ssim") == "x"
    assert inversion("lpips_alex") == "1-x" and inversion("dists") == "1-x"
    assert inversion("akd") == "-x" and inversion("aed") == "-x"
    assert oriented("lpips_vgg", [0.25]).tolist() == [0.75]
    assert oriented("akd", [2.0]).tolist() == [-2.0]
    assert oriented(None, [3.0]).tolist() == [3.0]


def test_lower_is_better_metric_is_inverted() -> None:
    better = [v - 0.05 for v in LPIPS]  # lower LPIPS at every rate
    rate = bd_rate(RATES, LPIPS, RATES, better, "lpips_alex")
    assert rate.value is not None and rate.value < 0
    # bd_quality is in LPIPS units, positive when the test's LPIPS is lower
    assert bd_quality(RATES, LPIPS, RATES, better, "lpips_alex").value == pytest.approx(0.05)
    # read as higher-is-better, LPIPS falls as the rate rises: every point but the cheapest is
    # dominated, and there is no curve left to integrate
    wrong = bd_quality(RATES, LPIPS, RATES, better)
    assert wrong.value is None and "1 usable RD point" in (wrong.reason or "")
    # 1 - x and -x are both slope -1 maps: BD-rate does not depend on which one is used
    assert bd_rate(RATES, LPIPS, RATES, better, "akd").value == pytest.approx(rate.value)
    # half the rate at equal LPIPS
    half = bd_rate(RATES, LPIPS, [r / 2 for r in RATES], LPIPS, "dists")
    assert half.value == pytest.approx(-50.0)


def test_rate_at_quality() -> None:
    hit = rate_at_quality(RATES, LPIPS, 0.15, "lpips_alex")
    assert hit.status == "interpolated"
    assert hit.kbps == pytest.approx(math.sqrt(40.0 * 80.0))  # halfway, linear in log-rate
    low = rate_at_quality(RATES, LPIPS, 0.5, "lpips_alex")
    assert low.status == "at_lowest" and low.kbps == 10.0
    miss = rate_at_quality(RATES, LPIPS, 0.05, "lpips_alex")
    assert miss.status == "not_reached" and miss.kbps is None
    assert miss.best == pytest.approx(0.10)
    assert rate_at_quality(RATES, PSNR, 34.5).kbps == pytest.approx(math.sqrt(20.0 * 40.0))


# --------------------------------------------------------------------------------------------
# inputs


def _manifest(tmp_path: Path) -> Path:
    rows = [
        ("a1.mp4", "alice", 60),
        ("a2.mp4", "alice", 200),
        ("b1.mp4", "bob", 150),
        ("c1.mp4", "carol", 40),
    ]
    lines = ["file\tperson\tframes"]
    for name, person, frames in rows:
        (tmp_path / name).write_bytes(b"")
        lines.append(f"{name}\t{person}\t{frames}")
    path = tmp_path / "MANIFEST.tsv"
    path.write_text("\n".join(lines) + "\n")
    return path


def test_select_clips(tmp_path: Path) -> None:
    manifest = _manifest(tmp_path)
    names = [c.name for c in select_clips(manifest, frames=125)]
    assert names == ["a2", "b1", "c1"]  # alice: the first clip long enough
    assert [c.name for c in select_clips(tmp_path, frames=125, skip_short=True)] == ["a2", "b1"]
    assert len(select_clips(manifest, one_per_person=False)) == 4
    assert [c.name for c in select_clips(manifest, persons=["bob"])] == ["b1"]
    assert len(select_clips(manifest, limit=1)) == 1
    split = tmp_path / "split.json"
    split.write_text(json.dumps({"validation_clips": ["b1.mp4", "c1.mp4"], "train_clips": []}))
    assert [c.name for c in select_clips(manifest, split=split)] == ["b1", "c1"]
    with pytest.raises(ClipSelectionError, match="no subset 'test'"):
        select_clips(manifest, split=split, subset="test")
    with pytest.raises(ClipSelectionError, match="dave"):
        select_clips(manifest, persons=["dave"])
    with pytest.raises(ClipSelectionError, match="no such file"):
        select_clips(tmp_path / "missing")


def test_parse_options() -> None:
    assert parse_qps(["x264=40,30"], ["x264"]) == {"x264": (30, 40)}
    assert parse_qps(None, ["x265"])["x265"]  # the default sweep
    with pytest.raises(BenchError, match=r"\[0, 51\]"):
        parse_qps(["x264=60"], ["x264"])
    with pytest.raises(BenchError, match="unknown anchor"):
        parse_qps(["h266=30"], ["x264"])
    assert parse_u("1.2, 0") == (0.0, 1.2)
    with pytest.raises(BenchError):
        parse_u("3.0")  # beyond the ladder (U_MAX = 2.5)


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--clips", "/nonexistent/clips"], "no such file or folder"),
        (["--anchors", "mpeg2"], "unknown anchor"),
        (["--metrics", "psnr,foo"], "unknown metric"),
        (["--u", "x"], "--u"),
        (["--generator", "nope"], "unknown generator"),
    ],
)
def test_cli_errors_are_one_line(
    carphone_path: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    extra: list[str],
    message: str,
) -> None:
    args = ["bench", "--clips", str(carphone_path), "--out", str(tmp_path), "--anchors", "none"]
    assert main([*args, *extra]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and message in err


# --------------------------------------------------------------------------------------------
# end to end


def test_source_stamp_follows_content_not_mtime(tmp_path: Path) -> None:
    """A re-synced data folder (same bytes, new mtimes) keeps the bench cache; an edit does not."""
    import os

    from keyface.eval.bench.worker import _source_stamp

    clip = tmp_path / "clip.mp4"
    clip.write_bytes(b"\x00" * 1000)
    before = _source_stamp(clip)
    os.utime(clip, (1, 1))
    assert _source_stamp(clip) == before
    clip.write_bytes(b"\x00" * 999 + b"\x01")
    assert _source_stamp(clip) != before


@pytest.mark.slow
def test_tiny_bench_and_cache(
    carphone_path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from keyface.eval.anchors import anchor_available

    if not anchor_available("x264"):
        pytest.skip("x264 not available")
    out = tmp_path / "bench"
    # The warp renderer: its curve is labelled plain "keyface".
    args = [
        "bench", "--clips", str(carphone_path), "--frames", "12", "--u", "0,0.6",
        "--anchors", "x264", "--qps", "x264=30,40", "--metrics", "psnr,ssim",
        "--generator", "warp", "--out", str(out), "-q",
    ]  # fmt: skip
    assert main(args) == 0
    data = json.loads((out / "points.json").read_text())
    assert {"protocol", "points", "averages", "bd", "run", "timing"} <= set(data)
    proto = data["protocol"]
    assert proto["frames"] == 12 and proto["size"] == 256
    assert proto["command"].startswith("keyface bench ") and "--frames 12" in proto["command"]
    assert "keyface" in proto["versions"] and len(proto["clips"]) == 1
    assert data["run"]["computed"] == 4 and data["run"]["cached"] == 0

    points = data["points"]
    assert len(points) == 4
    for p in points:
        assert {"clip", "person", "codec", "param", "bytes", "kbps", "frames", "metrics"} <= set(p)
        assert p["frames"] == 12 and p["bytes"] > 0
        assert set(p["metrics"]) == {"psnr", "ssim"}
        fps = 30000 / 1001
        assert p["kbps"] == pytest.approx(8 * p["bytes"] / (12 / fps) / 1000, rel=1e-4)
    assert {(p["codec"], p["param"]) for p in points} == {
        ("keyface", 0.0), ("keyface", 0.6), ("x264", 30), ("x264", 40)
    }  # fmt: skip
    # a coarser QP costs fewer bits
    x264 = {p["param"]: p for p in points if p["codec"] == "x264"}
    assert x264[40]["bytes"] < x264[30]["bytes"]

    assert len(data["averages"]) == 4
    assert all({"codec", "param", "kbps", "metrics"} <= set(a) for a in data["averages"])
    scopes = {(e["metric"], e["scope"]) for e in data["bd"]}
    assert ("psnr", "average") in scopes and ("ssim", "clip") in scopes
    for e in data["bd"]:
        for what in ("bd_rate", "bd_quality"):
            assert (e[what]["value"] is None) == (e[what]["reason"] is not None)

    assert (out / "rd_psnr.png").stat().st_size > 1000
    assert (out / "rd_ssim.png").is_file()
    report = (out / "report.md").read_text()
    assert "rd_psnr.png" in report and "keyface bench --clips" in report
    assert "BD-rate" in report

    cache = out / "cache" / "carphone_pristine"
    assert (cache / "crop.y4m").is_file()
    stamps = {f.name: f.stat().st_mtime_ns for f in cache.glob("*.json")}
    assert len(stamps) == 5  # four points + meta

    # Second run: everything from the cache, nothing recomputed.
    assert main(args) == 0
    again = json.loads((out / "points.json").read_text())
    assert again["run"]["computed"] == 0 and again["run"]["cached"] == 4
    assert {f.name: f.stat().st_mtime_ns for f in cache.glob("*.json")} == stamps
    assert again["points"] == points

    # An interrupted run resumes: only the missing point is computed.
    (cache / "x264_qp40.json").unlink()
    assert main([*args, "--jobs", "1"]) == 0
    resumed = json.loads((out / "points.json").read_text())
    assert resumed["run"]["computed"] == 1 and resumed["run"]["cached"] == 3
    assert np.isclose([p["kbps"] for p in resumed["points"]], [p["kbps"] for p in points]).all()

    # A metric added later is measured on its own: the cached metrics are kept, not redone.
    # Slow metrics can be measured on every N-th frame (--slow-every), and the point says so.
    more = [*args[: args.index("--metrics")], "--metrics", "psnr,ssim,aed", "--slow-every", "4"]
    more += [*args[args.index("--metrics") + 2 :], "--jobs", "1"]
    assert main(more) == 0
    added = json.loads((out / "points.json").read_text())
    assert added["run"]["computed"] == 4
    assert added["protocol"]["metrics"]["aed"]["every"] == 4
    assert added["protocol"]["metrics"]["psnr"]["every"] == 1
    assert "--slow-every 4" in added["protocol"]["command"]
    before = {(p["codec"], p["param"]): p for p in resumed["points"]}
    for p in added["points"]:
        assert p["sampled"] == {"aed": 4} and set(p["metrics"]) == {"psnr", "ssim", "aed"}
        assert p["metrics"]["psnr"] == before[(p["codec"], p["param"])]["metrics"]["psnr"]
    assert "aed every 4th" in (out / "report.md").read_text()

    # Another version of the codec's code: its keyface points are measured again, the anchors'
    # are not (they do not depend on keyface).
    import keyface.eval.bench.cache as bench_module

    monkeypatch.setattr(bench_module, "codec_digest", lambda: "another-codec")
    assert main([*more, "-q"]) == 0
    recoded = json.loads((out / "points.json").read_text())
    assert recoded["run"]["computed"] == 2 and recoded["run"]["cached"] == 2


def test_cache_digest_follows_every_module_a_point_imports(tmp_path: Path) -> None:
    """The digest that keys cached keyface points is derived from the import closure of the
    pipeline and the renderers (not a hand-kept list): editing any module in it, or a model
    file beside one, invalidates the cache; a module outside it does not."""
    import shutil

    import keyface
    from keyface.eval.bench import codec_dependencies, codec_digest

    src = Path(keyface.__file__).resolve().parent
    deps = {p.relative_to(src).as_posix() for p in codec_dependencies()}
    for needed in (
        "pipeline.py",
        "imageops.py",
        "compose/full_frame.py",
        "codec/encoder.py",
        "render/warp.py",
        "renderers.py",
        "generator/renderer.py",
        "motion/models/facemesh_pca_v1.npz",
        "generator/weights/kf-enh-v3.safetensors",
    ):
        assert needed in deps, needed
    assert "server/conference.py" not in deps and "cli/main.py" not in deps

    root = tmp_path / "copy"
    shutil.copytree(src, root / "keyface", ignore=shutil.ignore_patterns("__pycache__"))
    before = codec_digest(root)
    for edited in ("imageops.py", "pipeline.py", "motion/distance.py"):
        path = root / "keyface" / edited
        path.write_text(path.read_text() + "\n# edited\n")
        codec_digest.cache_clear()
        codec_dependencies.cache_clear()
        after = codec_digest(root)
        assert after != before, edited
        before = after
    server = root / "keyface" / "server" / "conference.py"
    server.write_text(server.read_text() + "\n# edited\n")
    codec_digest.cache_clear()
    codec_dependencies.cache_clear()
    assert codec_digest(root) == before


def _sleepy(task: dict) -> dict:
    import os
    import time

    time.sleep(task["seconds"])
    return {"pid": os.getpid()}


@pytest.mark.slow
def test_an_interrupted_pool_stops_its_workers() -> None:
    """Ctrl-C or an error in the parent cancels the queued jobs and ends the workers it
    started (they report their pids; the pool's process table is private)."""
    import os
    import time

    from keyface.eval.bench.runner import _alive, _Runner

    tasks = [{"seconds": 0.0}, {"seconds": 0.0}, {"seconds": 60.0}, {"seconds": 60.0}]
    seen: set[int] = set()
    t0 = time.monotonic()
    with pytest.raises(RuntimeError, match="stop"), _Runner(2) as runner:
        for _, result in runner.map_unordered(_sleepy, tasks):
            seen.add(result["pid"])
            raise RuntimeError("stop")
    assert seen and os.getpid() not in seen
    deadline = time.monotonic() + 10
    while any(_alive(p) for p in seen) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not any(_alive(p) for p in seen)
    assert time.monotonic() - t0 < 30  # the 60 s jobs were not waited for


def test_report_schema_reads_the_committed_results_and_refuses_others() -> None:
    """``points.json`` is a typed document: the committed bench results read back as a
    :class:`BenchReport` and write out the same; another schema is refused with its name."""
    from keyface.eval.bench import BenchReport, PointRecord, ReportSchemaError

    path = Path(__file__).resolve().parents[1] / "results" / "bench" / "points.json"
    data = json.loads(path.read_text())
    report = BenchReport.from_json(data)
    assert report.to_json() == data
    point = report.points[0]
    record = PointRecord.from_json({**point, "key": {}, "notes": {}, "created": ""})
    assert record.bytes == point["bytes"] and record.sampled == point.get("sampled", {})
    with pytest.raises(ReportSchemaError, match="keyface-bench/2"):
        BenchReport.from_json({**data, "schema": "keyface-bench/2"})
    with pytest.raises(ReportSchemaError, match="without bd"):
        BenchReport.from_json({k: v for k, v in data.items() if k != "bd"})


def test_a_crop_cached_before_the_one_crop_decision_is_made_again() -> None:
    """Issue 17: a square clip that already is a face crop used to be padded (box larger than
    the frame); its cached reference no longer matches what `keyface crop` / `encode` make."""
    from keyface.eval.bench.worker import _settled

    padded = {"crop_box": {"cx": 240.0, "cy": 240.0, "side": 592.5,
                           "source_width": 480, "source_height": 480}}  # fmt: skip
    whole = {"crop_box": {"cx": 240.0, "cy": 240.0, "side": 480.0,
                          "source_width": 480, "source_height": 480}}  # fmt: skip
    wide = {"crop_box": {"cx": 640.0, "cy": 300.0, "side": 700.0,
                         "source_width": 1280, "source_height": 720}}  # fmt: skip
    assert not _settled(padded) and _settled(whole) and _settled(wide)
    assert not _settled({})

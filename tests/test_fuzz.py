"""A short fuzzing run in CI (issue 14, item 2): hypothesis drives the structure-aware,
CRC-recomputing mutations of ``keyface.fuzzing`` from the committed seed corpus
(``tests/data/fuzz``, made by ``python benchmarks/fuzz.py --make-seeds``) into the parser, the
decoder with the real (default) renderer, the live datagram path and the HTTP join. Long runs:
``benchmarks/fuzz.py``."""

from __future__ import annotations

import random
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from keyface import fuzzing

SEEDS = Path(__file__).parent / "data" / "fuzz"
SECRET = b"fuzz-secret-0123456789abcdef"  # the key benchmarks/fuzz.py signs join.json with
STREAMS = [p.read_bytes() for p in sorted(SEEDS.glob("*.kf"))]
FAST = {p.stem: p.read_bytes() for p in sorted((SEEDS / "fast").glob("*.kf"))}
"""The fast corpus of the long decoder campaigns (4-5 frames of 32x32, ``--corpus fast``)."""
DATAGRAMS = [p.read_bytes() for p in sorted(SEEDS.glob("*.dgrams"))]
JOINS = [p.read_bytes() for p in sorted(SEEDS.glob("*.json"))]
CI = settings(  # reproducible in CI: derandomized, no example database
    deadline=None,
    database=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


def mutated(corpus: list[bytes], mutate) -> st.SearchStrategy[bytes]:
    """A seed with 1-4 stacked mutations drawn from a hypothesis-controlled generator."""

    @st.composite
    def build(draw: st.DrawFn) -> bytes:
        data = draw(st.sampled_from(corpus))
        rng = random.Random(draw(st.integers(0, 2**32 - 1)))
        for _ in range(draw(st.integers(1, 4))):
            data = mutate(rng, data, corpus)
        return data

    return build()


def test_the_seed_corpus_is_valid_and_small() -> None:
    assert len(STREAMS) == 4 and DATAGRAMS and JOINS  # v1: hevc, vvc; v2: hybrid, bidir
    assert sum(len(x) for x in STREAMS + DATAGRAMS + JOINS) < 16_000
    for data in STREAMS:
        raw = fuzzing.RawStream.split(data)
        assert raw is not None and raw.join() == data  # records round-trip with their CRCs
        fuzzing.parse_target(data)
    request_ok = fuzzing.join_target(SECRET)
    for body in JOINS:
        request_ok(body)


def test_mutations_mostly_reach_past_the_crc() -> None:
    """What makes the harness useful: most mutated streams still parse to their end or fail
    on a field, not on a CRC (the parser alone already held on main)."""
    from keyface.bitstream import BitstreamError, read_stream

    rng = random.Random(0)
    crc = 0
    for _ in range(300):
        data = fuzzing.mutate_stream(rng, rng.choice(STREAMS), STREAMS)
        try:
            error = read_stream(data).error
        except BitstreamError as exc:
            error = exc
        crc += error is not None and "CRC" in str(error)
    assert crc < 60, crc


def test_the_fast_corpus_covers_every_packet_type_mode_and_intra_codec() -> None:
    """What ``benchmarks/fuzz.py --corpus fast`` puts through the decoder (docs/bitstream.md,
    13): every seed decodes whole, and together they hold every packet type a stream carries,
    both format versions and modes, every intra codec, a promoted frame and a background."""
    from keyface.bitstream import StreamMode, read_stream
    from keyface.intra import available_intra_codecs
    from keyface.pipeline import decode_bytes

    assert sum(len(x) for x in FAST.values()) < 12_000
    kinds, codecs, modes, motions = set(), set(), set(), set()
    for name, data in FAST.items():
        parsed = read_stream(data)
        header = parsed.header
        assert parsed.error is None and parsed.complete, name
        assert max(header.width, header.height) <= 36, name
        kinds |= {type(p).__name__ for p in parsed.packets}
        codecs.add(header.intra_codec)
        motions.add(header.motion_name)
        if header.aux is not None:
            modes.add((header.aux.mode, header.aux.codec))
        result = decode_bytes(data)
        assert result.error is None and result.complete, name
        assert len(result.frames) >= 4 and header.frame_count in (0, len(result.frames)), name
        if name == "v1_promoted":  # frame 2 is rendered, then held as a reference
            assert header.promotes and not result.frames[2].keyframe
            assert result.frames[3].reference_frame == 2
        if name == "v1_background":
            assert result.background is not None
    assert kinds == {
        "KeyframePacket",
        "MotionPacket",
        "DetailPacket",
        "BackgroundPacket",
        "AuxPacket",
        "EndPacket",
    }
    assert codecs == set(available_intra_codecs())
    assert {m for m, _ in modes} == {StreamMode.HYBRID, StreamMode.BIDIRECTIONAL}
    assert ("x265" in {c for _, c in modes}) and len(modes) == 3  # bidirectional without aux
    assert motions == {"facemesh-pca", "facemesh-pca-field"}


def test_a_campaign_input_depends_only_on_its_seed_and_index() -> None:
    """``benchmarks/fuzz.py`` splits a campaign into ranges (``--start``, ``--jobs``,
    ``--log``): input ``i`` of seed ``s`` is the same in whatever range or process it is made."""
    corpus = list(FAST.values())

    def inputs(seed: int, indices: range) -> list[bytes]:
        rng = fuzzing.input_rng
        return [fuzzing.make_input(rng(seed, i), corpus, fuzzing.mutate_stream)[1] for i in indices]

    whole = inputs(5, range(0, 40))
    assert inputs(5, range(20, 40)) + inputs(5, range(0, 20)) == whole[20:] + whole[:20]
    assert inputs(6, range(0, 40)) != whole
    assert len(set(whole)) > 30


@settings(CI, max_examples=400)
@given(mutated(STREAMS, fuzzing.mutate_stream))
def test_fuzz_parser(data: bytes) -> None:
    fuzzing.parse_target(data)


DECODE = fuzzing.decode_target()


@pytest.mark.slow
@settings(CI, max_examples=60)
@given(mutated(STREAMS, fuzzing.mutate_stream))
def test_fuzz_decoder_with_the_real_renderer(data: bytes) -> None:
    DECODE(data)


@settings(CI, max_examples=15)
@given(mutated(STREAMS, fuzzing.mutate_stream))
def test_fuzz_decoder_quick(data: bytes) -> None:
    DECODE(data)


@settings(CI, max_examples=100)
@given(mutated(list(FAST.values()), fuzzing.mutate_stream))
def test_fuzz_decoder_fast_corpus(data: bytes) -> None:
    DECODE(data)


@settings(CI, max_examples=12)
@given(mutated(DATAGRAMS, fuzzing.mutate_datagrams))
def test_fuzz_live_datagrams(data: bytes) -> None:
    fuzzing.datagram_target()(data)


JOIN = fuzzing.join_target(SECRET)


@settings(CI, max_examples=400)
@given(mutated(JOINS, fuzzing.mutate_json))
def test_fuzz_http_join(body: bytes) -> None:
    JOIN(body)

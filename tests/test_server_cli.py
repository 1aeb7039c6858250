"""``keyface token``, ``keyface serve`` and ``keyface send``: arguments, one-line errors."""

from __future__ import annotations

import asyncio
import time

import pytest
from server_utils import SECRET, test_config, token

from keyface.cli.main import main
from keyface.server import verify_token
from keyface.server.http import start_server


def test_token_prints_a_verifiable_token(capsys) -> None:
    code = main(
        [
            "token",
            "--room",
            "r1",
            "--role",
            "send",
            "--participant",
            "cam",
            "--secret",
            SECRET.decode(),
            "--ttl",
            "60",
        ]
    )
    out = capsys.readouterr()
    assert code == 0
    claims = verify_token(SECRET, out.out.strip(), "r1", time.time(), "send")
    assert claims.participant == "cam" and claims.role == "send"
    assert "participant cam" in out.err


def test_token_url_and_secret_from_environment(capsys, monkeypatch) -> None:
    monkeypatch.setenv("KEYFACE_SECRET", SECRET.decode())
    assert main(["token", "--room", "a b", "--url", "http://h:1/"]) == 0
    url = capsys.readouterr().out.strip()
    assert url.startswith("http://h:1/room/a%20b#token=kf1.")
    claims = verify_token(SECRET, url.split("#token=")[1], "a b", time.time(), "receive")
    assert claims.participant.startswith("receive-")


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["token", "--room", "r", "--secret", "short"], "at least 16 bytes"),
        (["token", "--room", "r", "--secret", SECRET.decode(), "--ttl", "0"], "ttl"),
        (["serve", "--port", "0"], "a secret is needed"),
        (["serve", "--secret", "short"], "at least 16 bytes"),
        (["serve", "--secret", SECRET.decode(), "--generator", "nope"], "unknown generator"),
        (["serve", "--secret", SECRET.decode(), "--cpu-share", "0"], "--cpu-share"),
        (["serve", "--secret", SECRET.decode(), "--relay", "--relay-batch-ms", "-1"], "batch"),
        (["send", "--input", "x.mp4", "--server", "http://h", "--room", "r"], "token"),
        (
            [
                "send",
                "--input",
                "missing.mp4",
                "--server",
                "http://h",
                "--room",
                "r",
                "--token",
                "t",
            ],
            "no such file",
        ),
        (
            [
                "send",
                "--input",
                "x",
                "--server",
                "http://h",
                "--room",
                "r",
                "--token",
                "t",
                "--loss",
                "1.5",
            ],
            "--loss",
        ),
    ],
)
def test_bad_arguments_are_one_line_errors(argv, message, capsys, monkeypatch) -> None:
    monkeypatch.delenv("KEYFACE_SECRET", raising=False)
    monkeypatch.delenv("KEYFACE_TOKEN", raising=False)
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and message in err, err


def test_send_reports_unreachable_server_and_refused_join(carphone_path, capsys) -> None:
    clip = str(carphone_path)
    argv = ["send", "--input", clip, "--room", "r", "--max-frames", "5", "-q"]
    unused = "http://127.0.0.1:9"  # discard port: nothing listens
    assert main([*argv, "--server", unused, "--token", token("r", "a")]) == 2
    assert "cannot reach" in capsys.readouterr().err

    async def refused() -> int:
        server = await start_server(test_config(), port=0)
        try:
            wrong_room = token("elsewhere", "a")
            cmd = [*argv, "--server", server.url, "--token", wrong_room]
            return await asyncio.get_running_loop().run_in_executor(None, main, cmd)
        finally:
            await server.close()

    assert asyncio.run(refused()) == 2
    err = capsys.readouterr().err
    assert "refused the join (403)" in err and len(err.strip().splitlines()) == 1

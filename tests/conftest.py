"""Shared fixtures: the real media in ../shared/data, a range-capable HTTP server and a moto S3 server,
both on 127.0.0.1, and small timecoded videos."""
from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from tests.support.httpserver import MediaServer
from tests.support.timecoded import write_timecoded

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
MEDIA = SHARED / "media"


@pytest.fixture(autouse=True)
def _isolated(tmp_path_factory, monkeypatch):
    """One cache for the session, and each test in a folder of its own: whatever a command writes beside
    itself (a figure without --out) never lands in the checkout."""
    monkeypatch.setenv("AVTOOLS_CACHE", str(tmp_path_factory.getbasetemp() / "avtools-cache"))
    monkeypatch.chdir(tmp_path_factory.mktemp("cwd"))


@pytest.fixture(scope="session")
def served(tmp_path_factory):
    """A MediaServer over a folder holding the shared media files and two 30 s timecoded videos."""
    root = tmp_path_factory.mktemp("served")
    for name in ("mmaction2_demo.mp4", "decord_corrupted.mp4", "moviepy_video_with_failing_audio.mp4",
                 "torchcodec_nasa_13013.mp4"):
        shutil.copy(MEDIA / name, root / name)
    write_timecoded(root / "tc_a.mp4", seconds=30, size=(160, 120))
    write_timecoded(root / "tc_b.mp4", seconds=30, size=(120, 160), fps=30)
    (root / "watch").mkdir()
    shutil.copy(root / "tc_b.mp4", root / "watch" / "tc_b")  # a URL without a media suffix: yt-dlp extracts it
    with MediaServer(root) as server:
        yield server


@pytest.fixture(scope="session")
def s3_endpoint():
    """A moto S3 server on loopback (server mode: real HTTP on the wire)."""
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


@pytest.fixture
def s3_bucket(s3_endpoint, monkeypatch):
    import uuid

    import boto3

    for key, value in {"AWS_ENDPOINT_URL": s3_endpoint, "AWS_ACCESS_KEY_ID": "testing",
                       "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1"}.items():
        monkeypatch.setenv(key, value)
    name = f"bucket-{uuid.uuid4().hex[:8]}"
    boto3.client("s3", endpoint_url=s3_endpoint).create_bucket(Bucket=name)
    return name


TIMECODED_FPS = 16


@pytest.fixture(scope="session")
def timecoded_dataset(tmp_path_factory):
    """A dataset built by avtools from 7 timecoded 6 s videos at 16 fps (stored frame i shows index i), shards of
    2 samples (2, 2, 2, 1), frames stored at short side 64; bursts in the audio at every whole second."""
    from typer.testing import CliRunner

    from avtools.cli import app

    source = tmp_path_factory.mktemp("timecoded-src")
    for i in range(7):
        folder = source / "train" / ("up" if i % 2 else "down")
        folder.mkdir(parents=True, exist_ok=True)
        write_timecoded(folder / f"tc{i}.mp4", seconds=6, fps=TIMECODED_FPS, size=(96, 64))
    out = tmp_path_factory.mktemp("timecoded") / "ds"
    result = CliRunner().invoke(app, ["build-dataset", "folder", "--source", str(source), "--out", str(out),
                                      "--fps", str(TIMECODED_FPS), "--short-side", "64", "--samples-per-shard", "2",
                                      "--workers", "2", "--no-card"])
    assert result.exit_code == 0, result.output
    return out

"""The README's tour runs as written: every command of its tour block, on a tiny folder of videos in a fresh
working directory, with a moto S3 server standing in for the object store."""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import boto3
import pytest

README = Path(__file__).resolve().parents[1] / "README.md"


def tour_commands() -> list[str]:
    block = re.search(r"<!-- tour -->\s*```bash\n(.*?)```", README.read_text(), re.S).group(1)
    return [line for line in block.splitlines() if line.strip() and not line.lstrip().startswith("#")]


def tiny_videos(home: Path) -> None:
    """~/videos/{train,val}/<class>/*.mp4 from the demo media (real H.264 + AAC files)."""
    from avtools.ffmpeg import cache_dir
    from avtools.demo_media import demo_media

    media = demo_media(cache_dir() / "demo-media", 8)
    for name in ("horizontal-tone", "vertical-noise"):
        clips = sorted((media / name).glob("*.mp4"))
        for split, chosen in (("train", clips[:6]), ("val", clips[6:8])):
            (home / "videos" / split / name).mkdir(parents=True, exist_ok=True)
            for clip in chosen:
                shutil.copy(clip, home / "videos" / split / name / clip.name)


@pytest.mark.slow
def test_the_readme_tour_runs_as_written(tmp_path, s3_endpoint, monkeypatch):
    commands = tour_commands()
    assert any(c.startswith("avtools train") for c in commands) and any("s3://" in c for c in commands)
    tiny_videos(tmp_path)
    env = dict(os.environ, HOME=str(tmp_path), PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
               AWS_ENDPOINT_URL=s3_endpoint, AWS_ACCESS_KEY_ID="testing", AWS_SECRET_ACCESS_KEY="testing",
               AWS_DEFAULT_REGION="us-east-1", OMP_NUM_THREADS="2")
    boto3.client("s3", endpoint_url=s3_endpoint, region_name="us-east-1", aws_access_key_id="testing",
                 aws_secret_access_key="testing").create_bucket(Bucket="my-bucket")
    for command in commands:
        done = subprocess.run(["bash", "-c", command], cwd=tmp_path, env=env, capture_output=True, text=True,
                              timeout=600)
        assert done.returncode == 0, f"{command}\n{done.stdout[-2000:]}\n{done.stderr[-3000:]}"
    assert (tmp_path / "runs" / "mine" / "linear.json").exists() and (tmp_path / "runs" / "mine-s3" / "last.pt").exists()

"""Which ffmpeg program yt-dlp uses: a system one the user points to, else the one imageio-ffmpeg ships.

Decoding and encoding inside avtools go through PyAV's bundled FFmpeg; only yt-dlp's section downloads run
an `ffmpeg` program. yt-dlp checks for section support by looking for `ffmpeg` on PATH, so the chosen
program is exposed as `<cache>/bin/ffmpeg` and that folder is put first on PATH.
"""
from __future__ import annotations

import functools
import hashlib
import os
import shutil
import subprocess
from pathlib import Path

from avcl.storage import cache_dir

ENV_VAR = "AVTOOLS_FFMPEG"


@functools.lru_cache(maxsize=None)
def ffmpeg_dir(system_ffmpeg: Path | None = None) -> str:
    """A folder holding an executable named `ffmpeg`, also prepended to PATH; raises if none can be found."""
    chosen = system_ffmpeg or os.environ.get(ENV_VAR)
    if chosen:
        program = shutil.which(str(chosen))
        if not program:
            raise FileNotFoundError(f"--ffmpeg / {ENV_VAR}: {chosen} is not an executable program")
    else:
        import imageio_ffmpeg

        program = imageio_ffmpeg.get_ffmpeg_exe()
    folder = cache_dir() / "bin" / hashlib.sha1(program.encode()).hexdigest()[:12]
    folder.mkdir(parents=True, exist_ok=True)
    link = folder / "ffmpeg"
    if not link.exists():
        tmp = folder / f".ffmpeg.{os.getpid()}"
        tmp.unlink(missing_ok=True)
        tmp.symlink_to(program)
        os.replace(tmp, link)
    os.environ["PATH"] = f"{folder}{os.pathsep}{os.environ.get('PATH', '')}"
    return str(folder)


# Bounded HTTP range requests (FFmpeg >= 8): without them every seek asks for `bytes=N-` and the server pushes
# data until the connection is dropped, which costs several times a short section's size. Small requests keep
# the overshoot past the section low (bench/build_throughput.py: 16 KiB gives ~1.46x the clip's own size from a
# 120 s source, 64 KiB 1.86x) for ~24 requests per 10 s clip, which parallel workers hide.
RANGED_HTTP_INPUT = {"-initial_request_size": str(1 << 13), "-request_size": str(1 << 14), "-multiple_requests": "1"}


@functools.lru_cache(maxsize=None)
def ranged_http_input_args(folder: str) -> tuple[str, ...]:
    """ffmpeg input options for bounded range requests, or none when this ffmpeg does not know them."""
    try:
        help_text = subprocess.run([os.path.join(folder, "ffmpeg"), "-hide_banner", "-h", "protocol=http"],
                                   capture_output=True, text=True, timeout=30).stdout
    except (OSError, subprocess.SubprocessError):
        return ()
    return tuple(arg for key, value in RANGED_HTTP_INPUT.items() if f"{key} " in help_text for arg in (key, value))

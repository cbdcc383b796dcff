"""Get a clip's media onto local disk: yt-dlp section downloads, or a local mirror, or a local file.

Every failure becomes a `ClipError` with one reason of the taxonomy in `avtools.reasons`; transient ones are
retried here with exponential backoff before they are given up on (and a rerun of the build tries them again).

Section downloads: yt-dlp fetches [start - pad, end + pad] with stream copy, which starts on a keyframe at or
before the requested time; the written file's time 0 is the requested section start (earlier frames carry
negative timestamps and are dropped by the decoder), so the clip lies at [start - section_start, ...) in it.
The accurate cut happens while decoding (`avtools.media`).

Every network read has a time-out (`socket_timeout`: yt-dlp's requests, and ffmpeg's `-rw_timeout` on the
section download), so a server that sends headers and then nothing ends as a `network` failure. What is
stored of a URL (a sample's `source`, ledger messages) goes through `redact`: no user:password, no query
values but YouTube's video id, since shards are made to be shared.
"""
from __future__ import annotations

import dataclasses
import os
import re
import shutil
import tempfile
import time
import urllib.parse
from pathlib import Path

from avcl.storage import retry
from avcl.urls import redact, redact_text
from avtools.ffmpeg import ffmpeg_dir, ranged_http_input_args
from avtools.reasons import ClipError
from avtools.recipes import MEDIA_SUFFIXES, Clip

DEFAULT_URL_TEMPLATE = "https://www.youtube.com/watch?v={youtube_id}"


@dataclasses.dataclass
class FetchOptions:
    url_template: str = DEFAULT_URL_TEMPLATE
    source: Path | None = None  # local mirror (CVDF layout, class folders or flat)
    pad: float = 0.25  # seconds downloaded on each side of the clip (the cut back to a keyframe adds more)
    min_height: int = 128  # lowest format whose height still meets this
    cookies: Path | None = None
    cookies_from_browser: str | None = None
    proxy: str | None = None
    sleep: float = 0.0  # seconds between yt-dlp's HTTP requests
    retries: int = 3
    retry_wait: float = 5.0  # first backoff; doubles each attempt
    socket_timeout: float = 30.0
    ffmpeg: Path | None = None  # a system ffmpeg; default: the one from imageio-ffmpeg
    workroot: str | None = None  # where downloads are written (a build's own folder, removed at its end)

    def __post_init__(self):
        try:
            self.url_template.format(youtube_id="x")
        except (KeyError, IndexError, ValueError, AttributeError) as exc:
            raise ValueError(f"--url-template {self.url_template!r} cannot be filled in ({type(exc).__name__}: "
                             f"{exc}): name the video id as {{youtube_id}}, e.g. https://mirror/{{youtube_id}}.mp4") from None


@dataclasses.dataclass
class Fetched:
    path: str
    offset: float  # file time of the clip's source time 0 (so the clip starts at clip.start - offset)
    bytes_downloaded: int
    source: str  # the URL or local path the media came from
    workdir: str | None = None  # removed by `release`

    def release(self) -> None:
        if self.workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)


class Fetcher:
    def __init__(self, options: FetchOptions):
        self.options = options
        self.mirror = index_mirror(options.source) if options.source else None

    def fetch(self, clip: Clip) -> Fetched:
        if clip.path:
            return _local(clip.path)
        if self.mirror is not None:
            return self._from_mirror(clip)
        return with_retries(lambda: self._download(clip), self.options.retries, self.options.retry_wait)

    def _from_mirror(self, clip: Clip) -> Fetched:
        trimmed = self.mirror.get(clip.clip_id.lower())
        if trimmed:  # CVDF layout: the file already is [start, end]
            return dataclasses.replace(_local(trimmed), offset=clip.start or 0.0)
        full = self.mirror.get(clip.youtube_id.lower())
        if full:
            return _local(full)
        raise ClipError("not_found", f"no file for {clip.clip_id} in the local mirror {self.options.source}")

    def _download(self, clip: Clip) -> Fetched:
        import yt_dlp
        from yt_dlp.utils import download_range_func

        workdir = tempfile.mkdtemp(prefix="avtools-fetch-", dir=self.options.workroot)
        section_start = max(0.0, (clip.start or 0.0) - self.options.pad)
        params = self._ytdlp_params(workdir)
        if clip.end is not None:
            params["download_ranges"] = download_range_func(None, [(section_start, clip.end + self.options.pad)])
        url = self.options.url_template.format(youtube_id=clip.youtube_id)
        started = time.monotonic()
        try:
            with yt_dlp.YoutubeDL(params) as ydl:
                if is_direct_media(url):
                    ydl.process_ie_result(direct_media_info(ydl, url, clip.youtube_id), download=True)
                else:
                    ydl.extract_info(url, download=True)
        except BaseException as exc:  # yt-dlp raises DownloadError and, rarely, others; a time limit passes through
            shutil.rmtree(workdir, ignore_errors=True)
            if isinstance(exc, ClipError) or not isinstance(exc, Exception):
                raise
            if "ffmpeg exited" in str(exc) and time.monotonic() - started >= self.options.socket_timeout:
                # ffmpeg says only "Input/output error" when its -rw_timeout expires: it waited for data that
                # never came (a server that stalls after its headers)
                raise ClipError("network", f"{redact(url)}: no data for {self.options.socket_timeout:g} s "
                                           f"(--socket-timeout): the server stalled ({exc})") from exc
            raise classify_download_error(str(exc), url) from exc
        files = [p for p in Path(workdir).iterdir() if p.suffix not in (".part", ".ytdl") and p.is_file()]
        if not files:
            shutil.rmtree(workdir, ignore_errors=True)
            raise ClipError("fetch_error", f"yt-dlp wrote no file for {redact(url)}")
        path = max(files, key=lambda p: p.stat().st_size)
        if path.stat().st_size == 0:
            shutil.rmtree(workdir, ignore_errors=True)
            raise ClipError("corrupt", f"{redact(url)} gave an empty file")
        offset = section_start if clip.end is not None else 0.0
        return Fetched(str(path), offset, path.stat().st_size, redact(url), workdir)

    def _ytdlp_params(self, workdir: str) -> dict:
        o = self.options
        height = o.min_height
        ffmpeg_location = ffmpeg_dir(o.ffmpeg)
        params = {
            # the smallest format that still meets the target size; formats of unknown size pass ([height>=?])
            "format": f"bv*[height>=?{height}]+ba/b[height>=?{height}]/bv*+ba/b",
            "format_sort": ["+res", "+size", "+br"],
            "outtmpl": os.path.join(workdir, "media.%(ext)s"),
            "quiet": True, "no_warnings": True, "noprogress": True, "noplaylist": True,
            "retries": o.retries, "fragment_retries": o.retries, "socket_timeout": o.socket_timeout,
            "sleep_interval_requests": o.sleep or None,
            "ffmpeg_location": ffmpeg_location,
            "external_downloader_args": {"ffmpeg_i": [*ranged_http_input_args(ffmpeg_location),
                                                      "-rw_timeout", str(int(o.socket_timeout * 1e6))]},
            "js_runtimes": _js_runtimes(),
            "logger": _QuietLogger(),
        }
        if o.cookies:
            params["cookiefile"] = str(o.cookies)
        if o.cookies_from_browser:
            params["cookiesfrombrowser"] = (o.cookies_from_browser,)
        if o.proxy:
            params["proxy"] = o.proxy
        return {k: v for k, v in params.items() if v is not None}


def is_direct_media(url: str) -> bool:
    return urllib.parse.urlsplit(url).path.lower().endswith(MEDIA_SUFFIXES)


def direct_media_info(ydl, url: str, video_id: str) -> dict:
    """yt-dlp's info for a URL that is a media file (a mirror), checked with one HEAD request.

    The generic extractor would probe with a GET it leaves open while the download runs, which a server
    fills with data nobody reads; ffmpeg's own errors for a 404 or an HTML page carry no message to classify.
    """
    from yt_dlp.networking import HEADRequest

    with ydl.urlopen(HEADRequest(url)) as response:  # HTTP errors raise with their status in the message
        content_type = response.headers.get("Content-Type", "")
        length = response.headers.get("Content-Length")
    if content_type.startswith("text/"):
        raise ClipError("not_media", f"{redact(url)} is a {content_type} page, not media")
    if length == "0":
        raise ClipError("corrupt", f"{redact(url)} is an empty file")
    extension = os.path.splitext(urllib.parse.urlsplit(url).path)[1].lstrip(".").lower()
    return {"id": video_id, "title": video_id, "url": url, "ext": extension, "extractor": "direct",
            "extractor_key": "Direct", "webpage_url": url}


def _local(path: str) -> Fetched:
    if not os.path.isfile(path):
        raise ClipError("not_found", f"no such file: {path}")
    return Fetched(path, 0.0, 0, path)


def index_mirror(root: Path) -> dict[str, str]:
    """Lower-cased file stem -> path for every media file below `root` (class folders or flat)."""
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"--source {root} is not a folder")
    return {p.stem.lower(): str(p) for p in root.rglob("*") if p.suffix.lower() in MEDIA_SUFFIXES and p.is_file()}


def with_retries(attempt, retries: int, wait: float):
    """Call `attempt()`, retrying retryable ClipErrors with exponential backoff (and a little jitter)."""
    return retry(attempt, retries, wait, lambda exc: isinstance(exc, ClipError) and exc.retryable)


# (reason, pattern) in priority order; the first match wins.
_ERROR_PATTERNS = [
    # ffmpeg exits with its error code's low byte; 183 is AVERROR_INVALIDDATA, "Invalid data found when
    # processing input": the server's bytes are not readable media (truncated, or something else)
    ("corrupt", r"ffmpeg exited with code 183\b"),
    ("bot_check", r"not a bot|confirm you.re not a robot"),
    ("rate_limited", r"HTTP Error 429|Too Many Requests|rate.limit"),
    ("private", r"[Pp]rivate video|video is private"),
    ("removed", r"account (associated with this video )?has been terminated|video has been removed|"
                r"removed by the uploader|violat\w+ YouTube's|no longer available"),
    ("unavailable", r"not available in your country|copyright|[Ss]ign in to confirm your age|members.only|"
                    r"[Vv]ideo unavailable|This video is unavailable|[Pp]remieres in"),
    ("not_found", r"HTTP Error 40[4]|HTTP Error 410|Not Found"),
    ("forbidden", r"HTTP Error 403|Forbidden|PO [Tt]oken"),
    ("js_runtime", r"JavaScript runtime|js.runtime|n challenge|Only images are available"),
    ("not_media", r"Unsupported URL|No video formats found|not a valid URL|Requested format is not available"),
    ("network", r"timed out|[Cc]onnection (refused|reset|aborted)|Name or service not known|"
                r"Temporary failure in name resolution|Network is unreachable|Remote end closed|"
                r"IncompleteRead|EOF occurred|urlopen error"),
]


def classify_download_error(message: str, url: str = "") -> ClipError:
    """Map a yt-dlp error message to one reason of the taxonomy."""
    text = re.sub(r"\x1b\[[0-9;]*m", "", message)
    named = redact_text(f"{url}: {text.strip()}" if url and url not in text else text.strip())[:500]
    for reason, pattern in _ERROR_PATTERNS:
        if re.search(pattern, text):
            if reason == "not_media" and "Requested format" in text and "youtube" in url:
                reason = "js_runtime"  # YouTube without a JS runtime offers only storyboards
            return ClipError(reason, named)
    return ClipError("fetch_error", named)


def _js_runtimes() -> dict | None:
    """deno (pip-installed with avtools) for YouTube's JS challenges, when it can be found."""
    try:
        import deno

        return {"deno": {"path": deno.find_deno_bin()}}
    except Exception:
        path = shutil.which("deno")
        return {"deno": {"path": path}} if path else None


class _QuietLogger:
    """yt-dlp logger that keeps the terminal clean: errors come back as exceptions and are classified."""

    def debug(self, msg):
        pass

    info = warning = debug

    def error(self, msg):
        pass

"""Why a clip is not in the dataset: the one taxonomy the fetcher, the media filters and the ledger share.

`retryable` reasons are transient (a rerun of the same command tries those clips again); the others are final.
"""
from __future__ import annotations

import dataclasses


@dataclasses.dataclass(frozen=True)
class Reason:
    name: str
    retryable: bool
    meaning: str


_REASONS = [
    # fetch, final
    Reason("removed", False, "the video was deleted, its account terminated, or it violated the platform's terms"),
    Reason("private", False, "the video is private"),
    Reason("unavailable", False, "the video exists but cannot be watched (country block, copyright, age or sign-in gate)"),
    Reason("not_found", False, "the URL answered 404/410, or the local mirror has no file for the clip"),
    Reason("not_media", False, "the URL serves no media (an HTML page, an unsupported site)"),
    Reason("js_runtime", False, "YouTube needs a JavaScript runtime (deno) that is missing: install avtools' deps"),
    # fetch, transient
    Reason("bot_check", True, "'Sign in to confirm you're not a bot': pass --cookies, slow down, or change IP"),
    Reason("rate_limited", True, "HTTP 429 Too Many Requests: raise --sleep, lower --workers"),
    Reason("forbidden", True, "HTTP 403 (often an expired or missing PO token)"),
    Reason("network", True, "connection error or time-out"),
    Reason("fetch_error", True, "another download error; the message says more"),
    # media, final
    Reason("no_video", False, "the file has no video stream"),
    Reason("no_audio", False, "the file has no audio stream (--no-av-filters keeps video-only clips)"),
    Reason("silent_audio", False, "the audio track is silent (RMS below --silence-db)"),
    Reason("too_short", False, "less media than --min-duration seconds in the requested window"),
    Reason("corrupt", False, "the file cannot be decoded"),
    Reason("internal", True, "an unexpected error in avtools itself; please report it with the message"),
    # annotations (ledger rows of status `skipped`, id = file:line)
    Reason("bad_annotation", False, "an annotation row that cannot be read or would be unsafe to build (the message says why)"),
]
REASONS = {r.name: r for r in _REASONS}


class ClipError(Exception):
    """A per-clip failure with its reason; never stops the build."""

    def __init__(self, reason: str, message: str = ""):
        if reason not in REASONS:
            raise ValueError(f"unknown failure reason {reason!r}")
        super().__init__(f"{reason}: {message}" if message else reason)
        self.reason = reason
        self.message = message or REASONS[reason].meaning

    def __reduce__(self):  # picklable across worker processes
        return ClipError, (self.reason, self.message)

    @property
    def retryable(self) -> bool:
        return REASONS[self.reason].retryable

"""Prefixed identifiers, such as ``vid_`` for videos and ``tus_`` for resumable uploads.

The prefixes: ``vid_`` videos, ``evt_`` events, ``whk_`` webhooks, ``job_`` jobs, ``cli_``
clients, ``key_`` API keys, ``dlv_`` deliveries, ``msg_`` messages, ``upl_`` direct uploads,
``tus_`` resumable uploads. New ids start with the creation time in milliseconds (hex), so they
sort by age, and end with 64 random bits. Event ids of workers are deterministic
(:func:`event_id`): a redelivered command republishes the *same* ``rendition.completed`` id, and
consumers deduplicate on it.
"""

from __future__ import annotations

import hashlib
import re
import secrets
import time
from typing import Annotated

from pydantic import StringConstraints

PREFIXES = frozenset({"vid", "evt", "whk", "job", "cli", "key", "dlv", "msg", "upl", "tus"})

#: What a video's id looks like. It names the video's folder in storage, so a message naming
#: anything else is malformed.
VIDEO_ID_PATTERN = r"^vid_[0-9a-f]{12,64}$"
VideoId = Annotated[str, StringConstraints(pattern=VIDEO_ID_PATTERN)]
_VIDEO_ID = re.compile(VIDEO_ID_PATTERN)


def is_video_id(value: str) -> bool:
    return _VIDEO_ID.fullmatch(value) is not None


def new_id(prefix: str) -> str:
    """Return a new time-sortable id such as ``vid_0193b0c2f4a1c3e5d7f9a1b2c3d4``."""
    if prefix not in PREFIXES:
        raise ValueError(f"unknown id prefix {prefix!r}")
    return f"{prefix}_{time.time_ns() // 1_000_000:012x}{secrets.token_hex(8)}"


def event_id(*parts: str) -> str:
    """Return a deterministic event id for the given parts (same parts → same id)."""
    digest = hashlib.sha256("\x1f".join(parts).encode()).hexdigest()
    return f"evt_{digest[:32]}"

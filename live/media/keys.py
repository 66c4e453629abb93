"""Key names of live video in the datastore, each with its session's hash tag."""

from __future__ import annotations


def stream_key(sid: str) -> str:
    return f"nr:media:key:{{{sid}}}"  # the session's stream key


def publisher_claim(sid: str) -> str:
    return f"nr:media:live:{{{sid}}}"  # who publishes the session now, with its bitrate

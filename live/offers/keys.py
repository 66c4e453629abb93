"""Key names of offers and store screens in the datastore."""

from __future__ import annotations


def showing_key(screen_id: str) -> str:
    return f"nr:screen:{{{screen_id}}}:showing"

"""Who may run a live session: checks shared by the hub's ops and the HTTP routes."""

from __future__ import annotations

from live.errors import LiveError


def check_session_host(what: str, role: str, user: str, host: str) -> None:
    """A host runs the sessions they host and no other; admins run any."""
    if role == "host" and user != host:
        raise LiveError("forbidden", f"{what}: this session is hosted by someone else", 403)

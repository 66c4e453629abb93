"""Who is calling: bearer tokens on HTTP requests, checked against the app's key ring."""

from __future__ import annotations

from starlette.requests import HTTPConnection

from identity.errors import forbidden, unauthorized
from identity.tokens import KeyRing
from identity.types import Claims, Role


def keyring_of(conn: HTTPConnection) -> KeyRing:
    ring: KeyRing = conn.app.state.keyring
    return ring


def authenticate(conn: HTTPConnection) -> Claims | None:
    """The caller's verified claims, or ``None`` when no token was sent.

    A token that was sent but does not verify is an error, never anonymous access.
    """
    header = conn.headers.get("authorization")
    if header is None:
        return None
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise unauthorized("Authorization must be 'Bearer <token>'")
    return keyring_of(conn).verify(token.strip())


def require(conn: HTTPConnection, *roles: Role) -> Claims:
    """The caller's claims when their role is one of ``roles``; 401 or 403 otherwise."""
    claims = authenticate(conn)
    if claims is None:
        raise unauthorized()
    if roles and claims.role not in roles:
        raise forbidden(f"this needs one of the roles {', '.join(roles)}; you are {claims.role}")
    return claims

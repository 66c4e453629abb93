"""Signed access tokens: HS256 JWTs (PyJWT) under a key ring, so keys can rotate.

The ring signs with its first key and verifies with any key it still holds; a
token whose ``kid`` was retired no longer verifies.
"""

from __future__ import annotations

import json
import os
import secrets
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import jwt

from identity.errors import unauthorized
from identity.types import ROLES, Claims, Role

ALGORITHM = "HS256"
ISSUER = "newretail"


class KeyRing:
    """HMAC keys by id; the first one signs.

    Args:
        keys: ``kid -> secret`` in order, the signing key first.
    """

    def __init__(self, keys: Mapping[str, bytes]) -> None:
        if not keys:
            raise ValueError("a key ring needs at least one key")
        for kid, secret in keys.items():
            if not kid or len(secret) < 32:
                raise ValueError(f"key {kid!r} must have an id and at least 32 bytes of secret")
        self._keys = dict(keys)
        self.active_kid = next(iter(self._keys))

    @classmethod
    def from_spec(cls, spec: str) -> KeyRing:
        """Parse ``kid:secret,kid:secret`` (the ``NEWRETAIL_JWT_KEYS`` format)."""
        keys: dict[str, bytes] = {}
        for part in spec.split(","):
            kid, sep, secret = part.strip().partition(":")
            if not sep:
                raise ValueError("NEWRETAIL_JWT_KEYS entries look like kid:secret")
            keys[kid] = secret.encode()
        return cls(keys)

    @classmethod
    def load_or_create(cls, path: Path) -> KeyRing:
        """Read the ring kept at ``path``, making one with a fresh key the first time."""
        if path.exists():
            data = json.loads(path.read_text())
            return cls({k["kid"]: bytes.fromhex(k["secret"]) for k in data["keys"]})
        path.parent.mkdir(parents=True, exist_ok=True)
        kid = "k" + secrets.token_hex(4)
        secret = secrets.token_bytes(32)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps({"keys": [{"kid": kid, "secret": secret.hex()}]}))
        os.chmod(tmp, 0o600)
        tmp.replace(path)
        return cls({kid: secret})

    @property
    def kids(self) -> tuple[str, ...]:
        return tuple(self._keys)

    def secret(self, kid: str) -> bytes:
        return self._keys[kid]

    def issue(
        self,
        sub: str,
        role: Role,
        ttl: int,
        store: str | None = None,
        extra: Mapping[str, Any] | None = None,
    ) -> str:
        """Sign a token for ``sub`` with ``role`` valid for ``ttl`` seconds."""
        if role not in ROLES:
            raise ValueError(f"unknown role {role!r}; expected one of {', '.join(ROLES)}")
        if ttl <= 0:
            raise ValueError("ttl must be positive")
        now = int(time.time())
        claims: dict[str, Any] = {"sub": sub, "role": role, "iat": now, "exp": now + ttl}
        claims["iss"] = ISSUER
        if store is not None:
            claims["store"] = store
        if extra:
            claims.update(extra)
        return jwt.encode(
            claims, self._keys[self.active_kid], algorithm=ALGORITHM,
            headers={"kid": self.active_kid},
        )

    def verify(self, token: str) -> Claims:
        """Check signature, expiry and shape; raise ``IdentityError`` (401) otherwise."""
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError as exc:
            raise unauthorized(f"malformed token: {exc}") from None
        kid = header.get("kid")
        if not isinstance(kid, str) or kid not in self._keys:
            raise unauthorized("token signed with an unknown or retired key")
        try:
            data = jwt.decode(
                token, self._keys[kid], algorithms=[ALGORITHM], issuer=ISSUER,
                options={"require": ["sub", "role", "exp"]},
            )
        except jwt.ExpiredSignatureError:
            raise unauthorized("token expired") from None
        except jwt.PyJWTError as exc:
            raise unauthorized(f"invalid token: {exc}") from None
        role = data.get("role")
        if role not in ROLES or not isinstance(data.get("sub"), str):
            raise unauthorized("token has no valid sub and role")
        store = data.get("store")
        return Claims(
            sub=data["sub"], role=role, exp=int(data["exp"]),
            store=store if isinstance(store, str) else None, kid=kid,
        )

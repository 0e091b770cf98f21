"""OAuth2 client-credentials pieces shared by the sandbox's servers."""

from __future__ import annotations

import json
import secrets
import time

from aiohttp import BasicAuth, web


def json_error(
    cls: type[web.HTTPException], headers: dict[str, str] | None = None, **body
) -> web.HTTPException:
    return cls(text=json.dumps(body), content_type="application/json", headers=headers)


def basic_credentials(request: web.Request) -> tuple[str, str] | None:
    try:
        auth = BasicAuth.decode(request.headers.get("Authorization", ""))
    except ValueError:
        return None
    return auth.login, auth.password


def same_client(given: tuple[str | None, str | None] | None, expected: tuple[str, str]) -> bool:
    return (
        given is not None
        and None not in given
        and all(secrets.compare_digest(g.encode(), e.encode()) for g, e in zip(given, expected, strict=True))
    )


class Tokens:
    """Opaque bearer tokens this server issued, each valid for `ttl` seconds."""

    def __init__(self, ttl: int):
        self.ttl = ttl
        self._expiry: dict[str, float] = {}

    def issue(self) -> dict:
        now = time.monotonic()
        self._expiry = {t: e for t, e in self._expiry.items() if e > now}
        token = secrets.token_urlsafe(32)
        self._expiry[token] = now + self.ttl
        return {"access_token": token, "token_type": "bearer", "expires_in": self.ttl}

    def require(self, request: web.Request) -> None:
        """401 unless the request carries an unexpired bearer token from `issue`."""
        scheme, _, token = request.headers.get("Authorization", "").partition(" ")
        expiry = self._expiry.get(token.strip()) if scheme.lower() == "bearer" else None
        if expiry is None or expiry <= time.monotonic():
            raise json_error(
                web.HTTPUnauthorized,
                headers={"WWW-Authenticate": 'Bearer error="invalid_token"'},
                error="invalid_token",
            )

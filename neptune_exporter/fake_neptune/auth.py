"""Auth of the fake Neptune server: API tokens, JWT access tokens (exp/azp/iss), token exchange and refresh."""

from __future__ import annotations

import base64
import json
import secrets
import threading
import time
from dataclasses import dataclass, field

import jwt

from neptune_exporter.fake_neptune.faults import FaultConfig

REALM_PATH = "/auth/realms/neptune"
CLIENT_ID = "neptune-cli"
USERNAME = "tester"


@dataclass
class AuthService:
    """Issues and checks the tokens of one server; access tokens live `faults.token_ttl_s` seconds."""

    base_url: str
    faults: FaultConfig
    api_key: str = field(default_factory=lambda: secrets.token_hex(16))
    _secret: str = field(default_factory=lambda: secrets.token_hex(32), repr=False)
    _refresh_tokens: set[str] = field(default_factory=set, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    exchanges: int = 0
    refreshes: int = 0

    @property
    def issuer(self) -> str:
        return self.base_url + REALM_PATH

    def api_token(self) -> str:
        """The user's API token: base64 JSON with api_address + api_url (both clients) and our key."""
        payload = {"api_address": self.base_url, "api_url": self.base_url, "api_key": self.api_key}
        return base64.b64encode(json.dumps(payload).encode()).decode()

    def api_token_valid(self, token: str | None) -> bool:
        if not token:
            return False
        try:
            payload = json.loads(base64.b64decode(token.encode(), validate=False))
        except (ValueError, UnicodeDecodeError):
            return False
        return isinstance(payload, dict) and payload.get("api_key") == self.api_key

    def issue(self) -> dict:
        """A fresh (access JWT, refresh token) pair."""
        now = time.time()
        claims = {
            "exp": int(now + self.faults.token_ttl_s),
            "iat": int(now),
            "azp": CLIENT_ID,
            "iss": self.issuer,
            "sub": USERNAME,
            "preferred_username": USERNAME,
            "jti": secrets.token_hex(8),
        }
        access = jwt.encode(claims, self._secret, algorithm="HS256")
        refresh = "refresh-" + secrets.token_hex(16)
        with self._lock:
            self._refresh_tokens.add(refresh)
        return {"access": access, "refresh": refresh, "expires_in": int(self.faults.token_ttl_s)}

    def exchange(self, api_token: str | None) -> dict | None:
        """API token → tokens, or None when the API token is not ours."""
        if not self.api_token_valid(api_token):
            return None
        with self._lock:
            self.exchanges += 1
        return self.issue()

    def refresh(self, refresh_token: str | None) -> dict | None:
        """Refresh token → new tokens, or None for an unknown refresh token."""
        with self._lock:
            if refresh_token not in self._refresh_tokens:
                return None
            self.refreshes += 1
        return self.issue()

    def check_bearer(self, authorization: str | None) -> str | None:
        """None when the `Authorization: Bearer <jwt>` header is valid and unexpired, else the reason."""
        if not authorization or not authorization.startswith("Bearer "):
            return "missing bearer token"
        try:
            jwt.decode(authorization[7:], self._secret, algorithms=["HS256"], options={"require": ["exp"]})
        except jwt.ExpiredSignatureError:
            return "access token expired"
        except jwt.InvalidTokenError as exc:
            return f"invalid access token: {exc}"
        return None


def register(router) -> None:
    """Token exchange and refresh endpoints (shared by both clients)."""
    from neptune_exporter.fake_neptune.server import Response

    @router.route("GET", r"/api/backend/v1/authorization/oauth-token", auth=False, endpoint="auth.exchange")
    def exchange_api_token(ctx, request, match):
        tokens = ctx.auth.exchange(request.header("X-Neptune-Api-Token"))
        if tokens is None:
            return Response.error(401, "API token rejected: it was not issued by this server")
        return Response.json({"accessToken": tokens["access"], "refreshToken": tokens["refresh"], "username": USERNAME})

    @router.route("POST", REALM_PATH + r"/protocol/openid-connect/token", auth=False, endpoint="auth.refresh")
    def refresh_token(ctx, request, match):
        form = request.form()
        if form.get("grant_type") != "refresh_token":
            return Response.json({"error": "unsupported_grant_type"}, status=400)
        tokens = ctx.auth.refresh(form.get("refresh_token"))
        if tokens is None:
            return Response.json({"error": "invalid_grant", "error_description": "unknown refresh token"}, status=400)
        return Response.json(
            {
                "access_token": tokens["access"],
                "refresh_token": tokens["refresh"],
                "token_type": "Bearer",
                "expires_in": tokens["expires_in"],
                "refresh_expires_in": 86400,
                "scope": "openid",
            }
        )

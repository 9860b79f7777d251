"""The ``[security]`` section: users, sessions, API tokens and the server's secret key."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

__all__ = ["SecuritySection"]


class SecuritySection(BaseModel):
    """Who may log in, for how long, and how hard guessing is made (docs/auth.md)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    secret_key_file: Path | None = Field(
        None,
        description="File holding the server's secret key (CSRF tokens are derived from it; "
        "at least 32 characters). Default: `secret.key` in `server.data_dir`, generated "
        "with mode 0600 on first start. The variable `SHOPFLOOR_SECRET_KEY` overrides both. "
        "With `historian.shared = true` one of the two is required, the same on every API "
        "server (none is generated).",
    )
    session_idle_s: float = Field(
        1800.0,
        gt=0,
        description="A browser session unused this long (seconds) ends; the user logs in again.",
    )
    session_absolute_s: float = Field(
        43200.0,
        gt=0,
        description="A browser session ends this long (seconds) after its login, used or not.",
    )
    min_password_length: int = Field(
        10, ge=8, le=128, description="Shortest password accepted for a user."
    )
    lockout_threshold: int = Field(
        5,
        ge=1,
        description="Failed logins in a row after which a user is locked out for a while.",
    )
    lockout_base_s: float = Field(
        30.0,
        gt=0,
        description="The first lockout's length (seconds); each further lockout in a row "
        "doubles it, up to `security.lockout_max_s`.",
    )
    lockout_max_s: float = Field(
        900.0,
        gt=0,
        description="The longest lockout (seconds): a lockout always ends, so the last "
        "admin is never locked out for good.",
    )
    login_rate_per_minute: int = Field(
        20,
        ge=1,
        description="Login attempts accepted per client address per minute (then 429).",
    )

    mfa: Literal["optional", "required"] = Field(
        "optional",
        description="Second factor (TOTP codes from an authenticator app): `optional` (users "
        "who set one up must give a code at login) or `required` (admins and engineers "
        "without one can only set it up until they have).",
    )

    def relative_to(self, base: Path) -> SecuritySection:
        """A copy whose relative key file path is made absolute against ``base``."""
        key = self.secret_key_file
        if key is None or key.is_absolute():
            return self
        return self.model_copy(update={"secret_key_file": base / key})

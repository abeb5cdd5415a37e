"""API keys: which settings are secrets, how they reach a Ray worker, and the one redaction
every message and file goes through.

A key never travels by name in an environment handed to another process: Ray writes a job's
`runtime_env` in plain text to its logs and shows it to whoever can list jobs. So the settings
a Ray run sends as environment variables are filtered here (`shareable_env`), and the keys go
to the workers in memory, as a `Credentials` value (pydantic `SecretStr`: its `repr`, `str` and
any log line or traceback that prints it show `**********`).

Every key realign is handed is remembered in this process (`remember`), and `redact` masks
those and anything that looks like a key (`sk-…`, `Bearer …`) in a text: failures, stop
messages and errors pass through it before they are printed or written.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Mapping

from pydantic import BaseModel, ConfigDict, SecretStr

# A variable whose name ends so is a secret, whatever its value.
SECRET_SUFFIXES = ("_KEY", "_TOKEN", "_SECRET", "_PASSWORD")
MASK = "***"
# Prefixes of the providers' key formats (OpenAI, Anthropic-style, Hugging Face, GitHub, Slack,
# Google API keys, GitLab) and an HTTP bearer credential.
_KEY_PREFIX = re.compile(r"^(sk-|sk_|hf_|ghp_|gho_|ghs_|xox[abp]-|AIza|glpat-|Bearer\s)")
_TOKENISH = re.compile(r"^[A-Za-z0-9_\-]{24,}$")
_URL_PASSWORD = re.compile(r"://[^/@\s:]+:[^/@\s]+@")
_URL_PASSWORD_PART = re.compile(r"(://[^/@\s:]+:)[^/@\s]+@")
# Key-shaped substrings of a longer text (an error message, a server's echo of a request).
_KEY_IN_TEXT = re.compile(r"\b(sk-[A-Za-z0-9_\-*]{6,}|Bearer\s+[^\s\"',]+)")
MIN_REMEMBERED = 8  # shorter values would mask ordinary words


def is_secret_name(name: str) -> bool:
    return name.upper().endswith(SECRET_SUFFIXES)


def looks_like_credential(value: str) -> bool:
    """A key by its shape: a provider's key prefix, a URL with a password, or a long random
    token (letters of both cases and digits, or 32+ hex digits) with no path or URL in it."""
    v = value.strip()
    if len(v) >= 12 and _KEY_PREFIX.match(v):
        return True
    if _URL_PASSWORD.search(v):
        return True
    if not _TOKENISH.match(v) or not any(c.isdigit() for c in v):
        return False
    mixed = any(c.islower() for c in v) and any(c.isupper() for c in v)
    hexish = len(v) >= 32 and all(c in "0123456789abcdefABCDEF-" for c in v)
    return mixed or hexish


def shareable_env(env: Mapping[str, str], prefixes: tuple[str, ...]) -> dict[str, str]:
    """The variables with these prefixes that may be handed to another process in the clear:
    none named like a secret, none whose value looks like a key."""
    return {
        k: v
        for k, v in env.items()
        if k.startswith(prefixes) and not is_secret_name(k) and not looks_like_credential(v)
    }


class Credentials(BaseModel):
    """The keys a run's workers need, held as `SecretStr` (None: the worker's own environment
    or config file provides it, as on the driver)."""

    model_config = ConfigDict(frozen=True)

    openai_api_key: SecretStr | None = None
    google_api_key: SecretStr | None = None
    serper_api_key: SecretStr | None = None

    @classmethod
    def from_env(
        cls, env: Mapping[str, str] | None = None, openai_api_key: SecretStr | None = None
    ) -> Credentials:
        """The driver's keys: `openai_api_key` as its settings resolved it (flag, environment
        or config file), the search keys from its environment."""
        env = os.environ if env is None else env
        creds = cls(
            openai_api_key=openai_api_key,
            google_api_key=_secret(env.get("GOOGLE_API_KEY")),
            serper_api_key=_secret(env.get("SERPER_API_KEY")),
        )
        remember(*creds.values())
        return creds

    def value(self, name: str) -> str | None:
        secret: SecretStr | None = getattr(self, name)
        return secret.get_secret_value() if secret is not None else None

    def values(self) -> list[str]:
        return [v for v in (self.value(n) for n in type(self).model_fields) if v]


def _secret(value: str | None) -> SecretStr | None:
    return SecretStr(value) if value else None


_known: set[str] = set()


def remember(*secrets: str | SecretStr | None) -> None:
    """Mask these values in every text `redact` sees from now on, in this process."""
    for s in secrets:
        raw = s.get_secret_value() if isinstance(s, SecretStr) else s
        if raw and len(raw) >= MIN_REMEMBERED:
            _known.add(raw)


def redact(text: str, extra: Iterable[str | None] = ()) -> str:
    """`text` with every remembered key, every key in `extra` and anything shaped like a key
    masked."""
    for s in sorted({*_known, *(e for e in extra if e)}, key=len, reverse=True):
        if s in text:
            text = text.replace(s, MASK)
    text = _URL_PASSWORD_PART.sub(rf"\1{MASK}@", text)  # https://user:PASSWORD@host
    return _KEY_IN_TEXT.sub(MASK, text)

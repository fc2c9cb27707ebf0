"""What every HTTP client here needs from a server's answer: its error message, how long
it asks us to wait, and how long to back off before the next try."""

from __future__ import annotations

import os
import random


def bearer_headers(api_key_env: str | None) -> dict[str, str]:
    """``Authorization: Bearer …`` from the environment variable ``api_key_env`` when it
    is set (read at each call, never stored); empty otherwise."""
    key = os.environ.get(api_key_env) if api_key_env else None
    return {"Authorization": f"Bearer {key}"} if key else {}


def error_details(response) -> tuple[str, str | None]:
    """The error message of a non-200 answer and its machine-readable code, if any."""
    try:
        data = response.json()
    except ValueError:
        return response.text[:300], None
    error = data.get("error", data) if isinstance(data, dict) else data
    if isinstance(error, dict):
        code = error.get("code")
        return str(error.get("message") or error)[:300], code if isinstance(code, str) else None
    return str(error)[:300], None


def retry_after(response) -> float | None:
    """Seconds the server's ``Retry-After`` header asks for (``None`` without one)."""
    value = response.headers.get("retry-after")
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        return None


def backoff_delay(attempt: int, asked: float | None, *, base: float, ceiling: float, jitter: bool = True) -> float:
    """Seconds to wait before retry ``attempt`` (0-based): what the server asked for, or
    exponential backoff; with ``jitter``, a random point in the upper half so clients
    that failed together do not retry in step."""
    if asked is not None:
        return min(asked, ceiling)
    delay = min(ceiling, base * 2**attempt)
    return random.uniform(delay / 2, delay) if jitter else delay

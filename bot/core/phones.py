"""Phone numbers as written in rosters and typed in chats, normalised for comparison."""

from __future__ import annotations

import re

_MOBILE = re.compile(r"^1[3-9]\d{9}$")
_LANDLINE = re.compile(r"^0\d{2,3}-?\d{7,8}$")


def _clean(raw: object) -> str:
    if raw is None:
        return ""
    if isinstance(raw, float) and raw.is_integer():  # spreadsheets hand numbers as floats
        raw = int(raw)
    text = str(raw).strip().replace(" ", "").replace("\u3000", "")
    text = re.sub(r"[()（）]", "", text)
    if text.startswith("+86"):
        text = text[3:]
    elif text.startswith("0086"):
        text = text[4:]
    elif text.startswith("86") and len(text) == 13:
        text = text[2:]
    return text.lstrip("-")


def normalize_mobile(raw: object) -> str | None:
    """'+86 138-0013-8000' -> '13800138000'; None when it is not a mainland mobile number."""
    text = _clean(raw).replace("-", "")
    return text if _MOBILE.match(text) else None


def normalize_phone(raw: object) -> str | None:
    """A mobile number (normalised as above) or a landline such as '0571-87654321'; else None."""
    mobile = normalize_mobile(raw)
    if mobile:
        return mobile
    text = _clean(raw)
    return text if _LANDLINE.match(text) else None


def mask(phone: str | None) -> str:
    """138****1234: how a phone shows in lists and digests."""
    if not phone:
        return ""
    digits = phone.replace("-", "")
    if len(digits) < 7:
        return "*" * len(digits)
    return digits[:3] + "****" + digits[-4:]

"""Canadian postal code and FSA patterns: the one place that knows their shape.

Imported by both the build side and the query side, so it uses only the standard library.
"""

from __future__ import annotations

import re

#: First letters Canada Post uses (no D, F, I, O, Q, U, W, Z).
FIRST_LETTERS = "ABCEGHJKLMNPRSTVXY"
#: Letters allowed in the other letter positions (no D, F, I, O, Q, U).
OTHER_LETTERS = "ABCEGHJKLMNPRSTVWXYZ"

FSA_PATTERN = f"[{FIRST_LETTERS}][0-9][{OTHER_LETTERS}]"
LDU_PATTERN = f"[0-9][{OTHER_LETTERS}][0-9]"

FSA_RE = re.compile(FSA_PATTERN)
# Any spelling of a full postal code (case, spaces and a hyphen aside): groups FSA and LDU.
_LOOSE_POSTAL_RE = re.compile(f"({FSA_PATTERN})[ \\t-]*({LDU_PATTERN})")


def is_fsa(code: str) -> bool:
    return FSA_RE.fullmatch(code) is not None


def normalize_postal_code(text: str) -> str | None:
    """``m5v3l9``, ``M5V-3L9`` or `` M5V 3L9 `` -> ``M5V 3L9``; None when it is not one."""
    match = _LOOSE_POSTAL_RE.fullmatch(text.strip().upper())
    if match is None:
        return None
    return f"{match.group(1)} {match.group(2)}"

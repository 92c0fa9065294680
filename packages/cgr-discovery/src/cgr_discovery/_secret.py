"""A wrapper that keeps a credential out of reprs, logs and exception messages."""

from __future__ import annotations

import hmac
from typing import Final, NoReturn

_REDACTED: Final = "Secret('**********')"


class Secret:
    """Holds a credential; only :meth:`reveal` gives the value back.

    ``repr``/``str``/``format`` are redacted so that logging a config object, a failed
    assertion or an f-string in an exception message cannot leak a token. Pickling is
    refused: a secret written to disk by accident is a leak too.
    """

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        if not isinstance(value, str):
            raise TypeError("Secret takes a str")
        self._value = value

    def reveal(self) -> str:
        """The credential itself. Call it only where the value goes on the wire."""
        return self._value

    def __repr__(self) -> str:
        return _REDACTED

    __str__ = __repr__

    def __format__(self, format_spec: str) -> str:
        return _REDACTED

    def __bool__(self) -> bool:
        return bool(self._value)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Secret):
            return NotImplemented
        # Constant time, so comparing secrets leaks nothing through timing.
        return hmac.compare_digest(self._value.encode(), other._value.encode())

    def __hash__(self) -> int:
        return hash(("Secret", len(self._value)))

    def __reduce__(self) -> NoReturn:
        raise TypeError("a Secret cannot be pickled")

    # Immutable, so copies may share it; without these, copy.deepcopy of a config that holds
    # a Secret would hit __reduce__ and fail.
    def __copy__(self) -> Secret:
        return self

    def __deepcopy__(self, memo: dict[int, object]) -> Secret:
        return self

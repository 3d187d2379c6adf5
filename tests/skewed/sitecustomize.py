"""A host whose clock is off by REMINDERS_TEST_CLOCK_SKEW seconds, for the drills: put this
directory on PYTHONPATH and every Python clock read of wall time in the process (time.time,
datetime.now and friends) is off by that much, as on a host whose clock has drifted; the
monotonic clock is left alone, as a host's is. (Debian's libfaketime would do it from outside,
but under it Python's time.sleep never returns.)"""

from __future__ import annotations

import datetime as _datetime
import os
import time as _time

_SKEW = float(os.environ.get("REMINDERS_TEST_CLOCK_SKEW", "0") or 0)

if _SKEW:
    _real_time, _real_time_ns = _time.time, _time.time_ns
    _OFFSET = _datetime.timedelta(seconds=_SKEW)

    def _time_skewed() -> float:
        return _real_time() + _SKEW

    def _time_ns_skewed() -> int:
        return _real_time_ns() + int(_SKEW * 1e9)

    _time.time = _time_skewed
    _time.time_ns = _time_ns_skewed

    _Real = _datetime.datetime

    class _Any(type):
        # Every datetime is one: values from the database or a library are the real class.
        def __instancecheck__(cls, value: object) -> bool:
            return isinstance(value, _Real)

        def __subclasscheck__(cls, kind: type) -> bool:
            return issubclass(kind, _Real)

    class _SkewedDatetime(_datetime.datetime, metaclass=_Any):
        @classmethod
        def now(cls, tz=None):  # type: ignore[no-untyped-def]
            return super().now(tz) + _OFFSET

        @classmethod
        def utcnow(cls):  # type: ignore[no-untyped-def]
            return super().utcnow() + _OFFSET

        @classmethod
        def today(cls):  # type: ignore[no-untyped-def]
            return super().today() + _OFFSET

    _datetime.datetime = _SkewedDatetime  # type: ignore[misc]

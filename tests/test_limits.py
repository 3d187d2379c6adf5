"""What one upload, form or webhook may cost: the CSV file's checks are linear and capped
(size, columns, field length), and a refused row never stops the rows after it. Synthetic
data only."""

from __future__ import annotations

import io
import time

import pytest

from reminders.services import csvfile
from reminders.services.csvfile import UnusableFile, open_csv

HEADER = "booking_ref,name,procedure,date,time,phone"
ROW = "BK-1,Sian Jones,sacroplasty,2030-01-07,09:30,07911 100001"


def test_a_header_of_forty_thousand_names_is_checked_in_linear_time(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # A list's `in` made this 18 seconds; the cap is lifted to time the check itself.
    monkeypatch.setattr(csvfile, "MAX_COLUMNS", 100_000)
    extra = ",".join(f"extra-{n}" for n in range(40_000))
    content = f"{HEADER},{extra}\r\n{ROW}\r\n".encode()
    started = time.monotonic()
    checked = open_csv(io.BytesIO(content))
    assert time.monotonic() - started < 3
    assert len(checked.columns) == 40_006 and checked.rows_total == 1


def test_more_columns_than_the_cap_is_refused_saying_so() -> None:
    extra = ",".join(f"extra-{n}" for n in range(csvfile.MAX_COLUMNS))
    with pytest.raises(UnusableFile, match=r"line 1: \d+ values, more than the 200 columns"):
        open_csv(io.BytesIO(f"{HEADER},{extra}\r\n{ROW}\r\n".encode()))


def test_a_field_longer_than_the_cap_is_refused_naming_its_line_and_column() -> None:
    long_name = "A" * (csvfile.MAX_FIELD_CHARS + 1)
    content = f"{HEADER}\r\n{ROW}\r\nBK-2,{long_name},sacroplasty,2030-01-07,09:30,1\r\n"
    with pytest.raises(UnusableFile, match="line 3, column 2: a value of 10001 characters"):
        open_csv(io.BytesIO(content.encode()))


def test_a_file_over_the_size_cap_is_refused_before_it_is_read(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(csvfile, "MAX_BYTES", 1024 * 1024)
    content = (HEADER + "\r\n" + (ROW + "\r\n") * 20_000).encode()
    with pytest.raises(UnusableFile, match=r"the file is 1.1 MB, more than the 1 MB an import"):
        open_csv(io.BytesIO(content))

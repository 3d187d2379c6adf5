"""A CSV file of enrolments, checked as a whole before anything lands: encoding, header, CSV
structure, at least one row. `open_csv` refuses an unusable file with what to fix; `CsvFile`
then reads its rows one at a time.

Encoding: UTF-8, with or without the byte-order mark Excel writes for "CSV UTF-8". A file that
is not UTF-8 anywhere but is Windows-1252 throughout is read as Windows-1252, which is what
Excel's plain "CSV (Comma delimited)" writes on a UK Windows PC (Siân is the byte 0xE2 there,
never valid UTF-8). The whole file is checked before that decision, never a guess from its
first lines, so an accented name further down is not garbled. Anything else is refused with
what to do instead.
"""

from __future__ import annotations

import codecs
import csv
import io
import re
import shutil
import tempfile
from collections.abc import Generator, Iterator
from typing import BinaryIO

from reminders.core.enrolment import FIELDS, required_fields

REQUIRED = required_fields(from_system=True)
# Limits, so that one upload cannot hold a worker or a page for long: a day list of 100,000
# patients is about 15 MB with a dozen columns, and no field of an enrolment is near 10,000
# characters (a name is at most 200; a ward note in a column of its own, a few thousand).
MAX_BYTES = 20 * 1024 * 1024
MAX_COLUMNS = 200
MAX_FIELD_CHARS = 10_000
_CHUNK = 1 << 20
_SAVE_AS = "in Excel, use File > Save As and choose 'CSV UTF-8 (Comma delimited)'"
# Bytes that Windows-1252 leaves undefined: a file holding one is not Windows-1252 either.
_NOT_CP1252 = re.compile(rb"[\x81\x8d\x8f\x90\x9d]")
_MAGIC = (
    (b"PK\x03\x04", "an Excel workbook (.xlsx) or another zip file, not CSV"),
    (b"\xd0\xcf\x11\xe0", "an old Excel workbook (.xls), not CSV"),
    (b"%PDF", "a PDF, not CSV"),
    (b"\xff\xfe", "UTF-16 text (Excel's 'Unicode Text'), not CSV"),
    (b"\xfe\xff", "UTF-16 text, not CSV"),
)


# A cell a spreadsheet would take for a formula (OWASP, "CSV Injection"): `=HYPERLINK(...)`
# typed into a booking system must not run when the refused rows are opened in Excel.
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def neutralise(cell: str) -> str:
    """A cell for a CSV file we write: one that starts like a formula gets a leading
    apostrophe, which spreadsheets show as text and do not evaluate."""
    return "'" + cell if cell.startswith(_FORMULA_START) else cell


def restore(cell: str) -> str:
    """The cell as it was before `neutralise`, so a refused-rows file, fixed, imports as it
    is (a phone number such as +44 7911 100001 keeps its +)."""
    return cell[1:] if cell.startswith("'") and cell[1:].startswith(_FORMULA_START) else cell


class UnusableFile(ValueError):
    """The file cannot be imported at all; nothing has landed. The message says what to fix."""


class CsvFile:
    """A CSV file that has passed every check that can be made before anything lands."""

    def __init__(
        self, stream: BinaryIO, encoding: str, columns: list[str], fields: dict[str, str],
        rows_total: int,
    ) -> None:  # fmt: skip
        self._stream = stream
        self._encoding = encoding
        self.columns = columns  # one name per column, unique: blank or repeated ones numbered
        self.fields = fields  # enrolment field -> its column
        self.rows_total = rows_total  # data rows, blank lines not counted

    @property
    def encoding(self) -> str:
        return "windows-1252" if self._encoding == "cp1252" else "utf-8"

    @property
    def bytes_read(self) -> int:
        return self._stream.tell()

    def rows(self) -> Generator[tuple[int, dict[str, str], bool], None, None]:
        """(line, cells by column, whether there were more cells than columns) for every
        non-blank data row, read as the caller asks for them."""
        self._stream.seek(0)
        decoded = io.TextIOWrapper(self._stream, encoding=self._encoding, newline="")
        try:
            reader = csv.reader(decoded)
            _header(reader)  # checked by open_csv
            width = len(self.columns)
            line = reader.line_num + 1
            for cells in reader:
                start, line = line, reader.line_num + 1
                if not any(cell.strip() for cell in cells):
                    continue  # a blank line, or a spreadsheet's empty row of commas
                cells = [restore(cell) for cell in cells]
                extra = cells[width:]
                row = dict(zip(self.columns, cells + [""] * (width - len(cells)), strict=False))
                for index, cell in enumerate(extra, start=width + 1):
                    row[f"column {index}"] = cell
                yield start, row, any(cell.strip() for cell in extra)
        finally:
            decoded.detach()  # the stream is the caller's to close


def open_csv(stream: BinaryIO) -> CsvFile:
    """Check `stream` (a file opened in binary mode) as a CSV of enrolments: encoding, header,
    structure, at least one row. Raises UnusableFile saying what to fix."""
    if not stream.seekable():
        # Every check reads the whole file before the import reads it again; a pipe or an
        # upload that cannot seek is copied to a temporary file first, never into memory.
        # It has no name, so it goes when the CsvFile reading it does.
        spool = tempfile.TemporaryFile()  # noqa: SIM115
        shutil.copyfileobj(stream, spool, _CHUNK)
        stream = spool
    stream.seek(0)
    encoding = _encoding_of(stream)
    stream.seek(0)
    decoded = io.TextIOWrapper(stream, encoding=encoding, newline="")
    try:
        reader = csv.reader(decoded)
        header = _header(reader)
        columns, fields = _columns(header)
        rows = 0
        try:
            for cells in reader:
                _check_width(reader.line_num, cells)
                if any(cell.strip() for cell in cells):
                    rows += 1
        except csv.Error as exc:
            raise UnusableFile(
                f"line {reader.line_num}: the file is not valid CSV ({exc}); a value that "
                "contains quotes or line breaks must be in double quotes"
            ) from None
    finally:
        decoded.detach()
    if rows == 0:
        raise UnusableFile("the file has a header but no rows to import")
    return CsvFile(stream, encoding, columns, fields, rows)


def _check_width(line: int, cells: list[str]) -> None:
    if len(cells) > MAX_COLUMNS:
        raise UnusableFile(
            f"line {line}: {len(cells)} values, more than the {MAX_COLUMNS} columns a file may "
            "have; check that the file is the booking system's list"
        )
    for number, cell in enumerate(cells, start=1):
        if len(cell) > MAX_FIELD_CHARS:
            raise UnusableFile(
                f"line {line}, column {number}: a value of {len(cell)} characters, more than "
                f"the {MAX_FIELD_CHARS} any field may have; a double quote that is not closed "
                "often causes this"
            )


def _encoding_of(stream: BinaryIO) -> str:
    size = stream.seek(0, io.SEEK_END)
    stream.seek(0)
    if size > MAX_BYTES:
        raise UnusableFile(
            f"the file is {size / 1048576:.1f} MB, more than the {MAX_BYTES // 1048576} MB an "
            "import may be; split it into smaller files"
        )
    first = stream.read(_CHUNK)
    if not first.lstrip(codecs.BOM_UTF8).strip():
        raise UnusableFile("the file is empty; it needs a header row and at least one row")
    for magic, what in _MAGIC:
        if first.startswith(magic):
            raise UnusableFile(f"this is {what}; {_SAVE_AS}")
    utf8 = codecs.getincrementaldecoder("utf-8")()
    is_utf8, is_cp1252 = True, True
    chunk = first
    while chunk:
        if b"\x00" in chunk:
            raise UnusableFile(f"this is not a text file; {_SAVE_AS}")
        if is_utf8:
            try:
                utf8.decode(chunk)
            except UnicodeDecodeError:
                is_utf8 = False
        is_cp1252 = is_cp1252 and not _NOT_CP1252.search(chunk)
        chunk = stream.read(_CHUNK)
    if is_utf8:
        try:
            utf8.decode(b"", final=True)
        except UnicodeDecodeError:
            is_utf8 = False  # the file ends part-way through a character
    if is_utf8:
        return "utf-8-sig"  # takes off Excel's byte-order mark, if there is one
    if is_cp1252:
        return "cp1252"
    raise UnusableFile(f"the file is neither UTF-8 nor Windows-1252 text; {_SAVE_AS}")


def _header(reader: Iterator[list[str]]) -> list[str]:
    try:
        for cells in reader:
            _check_width(1, cells)
            if any(cell.strip() for cell in cells):
                return cells
    except csv.Error as exc:
        raise UnusableFile(f"the header row is not valid CSV ({exc})") from None
    raise UnusableFile("the file is empty; it needs a header row and at least one row")


def _columns(header: list[str]) -> tuple[list[str], dict[str, str]]:
    columns: list[str] = []
    # Membership by dict, not by list: a header of many distinct names is checked in linear
    # time (a list made 40,000 names take 18 seconds).
    numbers: dict[str, int] = {}  # column name -> its number
    fields: dict[str, str] = {}
    for number, cell in enumerate(header, start=1):
        name = cell.strip()
        field = name.lower()
        if field in FIELDS:
            if field in fields:
                raise UnusableFile(
                    f"the column {field} appears twice (columns {numbers[fields[field]]}"
                    f" and {number}); keep one"
                )
            fields[field] = name
        if not name or name in numbers:
            name = f"column {number}"
        numbers.setdefault(name, number)
        columns.append(name)
    missing = [name for name in REQUIRED if name not in fields]
    if missing:
        delimited = ";" in ",".join(header) and len(header) == 1
        hint = (
            "the columns are separated by semicolons, not commas; " + _SAVE_AS
            if delimited
            else f"the header row must name the columns: {', '.join(REQUIRED)} are required"
        )
        raise UnusableFile(f"no {', '.join(missing)} column; {hint}")
    return columns, fields

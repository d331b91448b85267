"""Readers for experiment tables: Parquet (a file or a folder of files) and CSV.

Everything goes through pyarrow. ``iter_batches`` streams a large file in chunks
of at most ``batch_rows`` rows so memory stays bounded; ``read_table`` reads the
whole table. Both check, before any row is read, that the file exists, has a
supported format, has no duplicate column names and holds the requested columns.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.dataset as pads
import pyarrow.parquet as pq

from hmum.exceptions import DataError

CSV_SUFFIXES = (".csv", ".csv.gz", ".csv.bz2")
PARQUET_SUFFIXES = (".parquet", ".pq")




def _format_of(path: Path) -> str:
    name = path.name.lower()
    if path.is_dir():
        return "parquet"
    if name.endswith(PARQUET_SUFFIXES):
        return "parquet"
    if name.endswith(CSV_SUFFIXES):
        return "csv"
    raise DataError(
        f"{path}: unsupported file type; expected one of "
        f"{', '.join(PARQUET_SUFFIXES + CSV_SUFFIXES)} or a folder of Parquet files"
    )


def delimiter_hint(path: Path, names: Sequence[str]) -> str:
    """A hint when a CSV header read as one column looks separated by ';', tab or '|'."""
    if len(names) != 1 or _format_of(path) != "csv":
        return ""
    for sep in (";", "\t", "|"):
        if sep in names[0]:
            return (f"; the header is one column {names[0][:60]!r}: the file looks "
                    f"{sep!r}-separated, and hmum reads comma-separated CSV (convert it, e.g. "
                    f"pandas.read_csv(path, sep={sep!r}).to_csv(new_path, index=False))")
    return ""


def _check_names(path: Path, names: Sequence[str], columns: Sequence[str] | None) -> None:
    dup = sorted(n for n, c in Counter(names).items() if c > 1)
    if dup:
        raise DataError(f"{path}: duplicate column names {dup}; each column name must be unique")
    if columns is not None:
        missing = [c for c in columns if c not in set(names)]
        if missing:
            raise DataError(
                f"{path}: missing column(s) {missing}; the file has columns {list(names)}"
                + delimiter_hint(path, names)
            )


@contextmanager
def _reading(path: Path):
    """Re-raise pyarrow's read errors (which do not name the file) as DataError naming it."""
    try:
        yield
    except (DataError, FileNotFoundError):
        raise
    except (pa.ArrowException, OSError) as e:
        what = "CSV" if _format_of(path) == "csv" else "Parquet"
        detail = " ".join(str(e).split())
        hint = ""
        if what == "CSV":
            try:
                hint = delimiter_hint(path, _csv_header(path))
            except (pa.ArrowException, OSError):
                pass
        raise DataError(f"{path}: cannot read it as {what}: {detail}{hint}") from None


def _csv_header(path: Path) -> list[str]:
    # Read a single small block: only the header row is needed.
    reader = pacsv.open_csv(path, read_options=pacsv.ReadOptions(block_size=1 << 16))
    return list(reader.schema.names)


def column_names(path: str | Path) -> list[str]:
    """Column names of a table file, without reading its rows."""
    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(f"data file not found: {p}")
    fmt = _format_of(p)
    with _reading(p):
        if fmt == "csv":
            if p.stat().st_size == 0:
                raise DataError(f"{p}: the file is empty (no header, no rows)")
            return _csv_header(p)
        if p.is_dir():
            return list(pads.dataset(p, format="parquet").schema.names)
        return list(pq.ParquetFile(p).schema_arrow.names)


def _csv_convert_options(columns: Sequence[str] | None) -> pacsv.ConvertOptions:
    # Empty strings in CSV mean "missing", as in pandas.
    return pacsv.ConvertOptions(
        include_columns=list(columns) if columns is not None else None,
        strings_can_be_null=True,
    )


def iter_batches(
    path: str | Path, *, columns: Sequence[str] | None = None, batch_rows: int = 1_000_000
) -> Iterator[pa.Table]:
    """Yield the table at ``path`` in chunks of at most ``batch_rows`` rows.

    Raises ``DataError`` (naming the file and the column) for a missing column,
    duplicate column names, an unsupported format, or an empty file.
    """
    if batch_rows < 1:
        raise ValueError(f"batch_rows must be >= 1, got {batch_rows}")
    p = Path(path)
    names = column_names(p)
    _check_names(p, names, columns)
    fmt = _format_of(p)
    n_seen = 0
    with _reading(p):
        for t in _rechunk(_raw_pieces(p, fmt, columns), batch_rows):
            n_seen += t.num_rows
            yield t
    if n_seen == 0:
        raise DataError(f"{p}: the file has a header but no rows")


def _raw_pieces(p: Path, fmt: str, columns: Sequence[str] | None) -> Iterator[pa.Table]:
    """Pieces of the file in storage order: CSV blocks or Parquet row groups."""
    if fmt == "csv":
        reader = pacsv.open_csv(
            p,
            read_options=pacsv.ReadOptions(block_size=1 << 24),
            convert_options=_csv_convert_options(columns),
        )
        for rb in reader:
            yield pa.Table.from_batches([rb])
        return
    # Row group by row group: ParquetFile.iter_batches and the dataset scanner both
    # buffer ahead (GBs on a 10 M-row file); read_row_group keeps memory flat.
    files = (
        sorted(f for f in p.rglob("*") if f.is_file() and f.name.endswith(PARQUET_SUFFIXES))
        if p.is_dir()
        else [p]
    )
    for f in files:
        pf = pq.ParquetFile(f)
        for i in range(pf.num_row_groups):
            yield pf.read_row_group(i, columns=list(columns) if columns else None)


def _rechunk(pieces: Iterator[pa.Table], batch_rows: int) -> Iterator[pa.Table]:
    """Re-cut a stream of tables into tables of exactly batch_rows rows (last: fewer)."""
    buf: list[pa.Table] = []
    rows = 0
    for piece in pieces:
        if piece.num_rows == 0:
            continue
        buf.append(piece)
        rows += piece.num_rows
        if rows >= batch_rows:
            t = pa.concat_tables(buf)
            full = rows - rows % batch_rows
            for off in range(0, full, batch_rows):
                yield t.slice(off, batch_rows)
            rest = t.slice(full)
            buf = [rest] if rest.num_rows else []
            rows = rest.num_rows
    if rows:
        yield pa.concat_tables(buf)


def read_table(path: str | Path, *, columns: Sequence[str] | None = None) -> pa.Table:
    """Read a whole table (all rows) from Parquet or CSV; same checks as ``iter_batches``."""
    p = Path(path)
    names = column_names(p)
    _check_names(p, names, columns)
    with _reading(p):
        if _format_of(p) == "csv":
            t = pacsv.read_csv(p, convert_options=_csv_convert_options(columns))
        else:
            t = pads.dataset(p, format="parquet").to_table(
                columns=list(columns) if columns else None)
    if t.num_rows == 0:
        raise DataError(f"{p}: the file has a header but no rows")
    return t


def write_parquet(table: pa.Table, path: str | Path) -> None:
    """Write a table to Parquet atomically (temporary name, then rename)."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    tmp = p.with_name(p.name + ".tmp")
    pq.write_table(table, tmp, compression="zstd")
    tmp.replace(p)


def write_frame(df, path: str | Path) -> None:
    """A pandas DataFrame to ``path``: CSV when its name ends in .csv (no index), else
    Parquet (``write_parquet``)."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    if p.suffix.lower() == ".csv":
        df.to_csv(p, index=False)
    else:
        write_parquet(pa.Table.from_pandas(df, preserve_index=False), p)


# --------------------------------------------------------------------------------------
# Sharded reading (distributed training): each worker reads only its row groups
# --------------------------------------------------------------------------------------


def _parquet_files(p: Path) -> list[Path]:
    """The Parquet files of ``p`` in the order every reader here uses (sorted paths)."""
    if not p.is_dir():
        return [p]
    return sorted(f for f in p.rglob("*") if f.is_file() and f.name.endswith(PARQUET_SUFFIXES))


def row_group_pieces(path: str | Path) -> list[tuple[Path, int, int, int]]:
    """Every non-empty Parquet row group of ``path``, from the file footers only.

    Returns (file, row group index, global start row, rows) per piece, in storage
    order: files sorted by path, row groups in file order. ``global start row`` is
    the position of the piece's first row in that order, so row ``start + j`` of a
    piece is the same row whichever worker reads it.

    Raises ``DataError`` for a CSV file (row groups are the unit of sharding) or a
    file without rows.
    """
    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(f"data file not found: {p}")
    if _format_of(p) != "parquet":
        raise DataError(
            f"{p}: sharded reading needs Parquet (row groups are the unit a worker reads), "
            "received CSV; convert it once, e.g. pyarrow.parquet.write_table("
            "pyarrow.csv.read_csv(path), out, row_group_size=100_000)"
        )
    pieces: list[tuple[Path, int, int, int]] = []
    start = 0
    for f in _parquet_files(p):
        with _reading(f):
            meta = pq.ParquetFile(f).metadata
        for i in range(meta.num_row_groups):
            n = meta.row_group(i).num_rows
            if n:
                pieces.append((f, i, start, n))
                start += n
    if not pieces:
        raise DataError(f"{p}: the file has a header but no rows")
    return pieces


def iter_shard(
    path: str | Path, rank: int, world_size: int, *, columns: Sequence[str] | None = None
) -> Iterator[tuple[int, pa.Table]]:
    """Yield ``(start, table)`` for the row groups of worker ``rank`` out of ``world_size``.

    Row group i (in the order of ``row_group_pieces``) belongs to worker
    ``i % world_size``; a worker never reads another worker's row groups. ``start``
    is the global index of the piece's first row. Column checks as ``iter_batches``.
    """
    if world_size < 1 or not 0 <= rank < world_size:
        raise ValueError(
            f"rank must be in [0, world_size) and world_size >= 1, got rank={rank}, "
            f"world_size={world_size}"
        )
    p = Path(path)
    pieces = row_group_pieces(p)
    _check_names(p, column_names(p), columns)
    for f, i, start, _ in pieces[rank::world_size]:
        with _reading(f):
            t = pq.ParquetFile(f).read_row_group(i, columns=list(columns) if columns else None)
        yield start, t

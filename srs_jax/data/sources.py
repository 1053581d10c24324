"""Raw-file readers: every format becomes a polars LazyFrame ``(user, item, time, row)``.

* ``user`` / ``item``: raw ids as stored (integer or string columns; never cast to float).
* ``time``: int64, only its order matters (seconds, ms or us depending on the source; for the
  timestamp-less text formats it is the line/token position, i.e. the file order).
* ``row``: the original row index (uint32) of the raw file, the tie-breaker after ``time``.

Rows with a null user, item or time are dropped. The rating/event filters of the config
(``min_rating``, ``event_value``) are applied here, after ``row`` is assigned.

Before polars reads a file, ``check_file`` compares its first bytes with the configured format (an
empty file, a parquet file read as text, a binary file read as CSV, a text file read as parquet,
a ``.gz`` name on an uncompressed file); each mismatch is a ``DataFileError`` naming the file and the
config field to fix. Errors polars raises later on values (a time string that does not parse, ...)
are turned into one such line too (``parse_error_message``).
"""

from __future__ import annotations

import gzip
import zlib
from pathlib import Path

import polars as pl

from srs_jax.config.names import FORMATS
from srs_jax.data import synthetic
from srs_jax.data.frames import frame_from_arrays

__all__ = ["FORMATS", "DataFileError", "check_file", "frame_from_arrays", "parse_error_message",
           "raw_path", "read_source"]

_SNAP_SCHEMA = {"user": pl.Int64, "check_in_time": pl.String, "latitude": pl.Float64,
                "longitude": pl.Float64, "location_id": pl.Int64}
_SNAP_TIME_FORMAT = "%Y-%m-%dT%H:%M:%SZ"


def raw_path(cfg) -> Path:
    """The raw file of ``cfg``; FileNotFoundError (path + download hint) when it is absent."""
    if cfg.path is None:
        raise FileNotFoundError(
            f"{cfg.name}: config.data.path is not set: point it at the raw file ({cfg.source_url})")
    path = Path(cfg.path).expanduser()
    # The same file compressed or not (e.g. Beauty_and_Personal_Care.csv[.gz]).
    other = path.with_suffix("") if path.suffix == ".gz" else path.with_name(path.name + ".gz")
    if not path.is_file() and other.is_file():
        return other
    if not path.is_file():
        raise FileNotFoundError(f"{cfg.name}: raw file {path.resolve()} not found: {_fetch_hint(cfg)}")
    return path


def _fetch_hint(cfg) -> str:
    url = str(cfg.source_url or "")
    if "http" in url or "archive" in url:
        return f"download it from {url} and place it there, or set config.data.path"
    return "set config.data.path to the file (and config.data.format / columns to match it)"


class DataFileError(ValueError):
    """A raw data file cannot be read with the data config (the message names file and field)."""


_PARQUET_MAGIC = b"PAR1"
_GZIP_MAGIC = b"\x1f\x8b"
_TEXT_FORMATS = ("csv", "snap_gowalla", "user_item", "user_items")


def _head_bytes(path: Path, n: int = 1 << 16) -> bytes:
    with open(path, "rb") as f:
        return f.read(n)


def check_file(cfg, path: Path) -> None:
    """Raises ``DataFileError`` when ``path`` cannot be a ``cfg.format`` file (module docstring)."""
    try:
        head = _head_bytes(path)
    except OSError as e:
        raise DataFileError(f"{cfg.name}: cannot read {path}: {e.strerror}") from e
    fmt = f"config.data.format={cfg.format!r}"
    if not head:
        raise DataFileError(f"{cfg.name}: {path} is empty: {_fetch_hint(cfg)}")
    if cfg.format == "parquet":
        if not head.startswith(_PARQUET_MAGIC):
            kind = "gzip-compressed" if head.startswith(_GZIP_MAGIC) else "not a parquet file"
            raise DataFileError(f"{cfg.name}: {path} is {kind} but {fmt}: set config.data.format "
                                "to the file's format (e.g. 'csv') or fix config.data.path")
        return
    if head.startswith(_PARQUET_MAGIC):
        raise DataFileError(f"{cfg.name}: {path} is a parquet file but {fmt}: set "
                            "config.data.format='parquet'")
    if head.startswith(_GZIP_MAGIC):
        if path.suffix != ".gz":
            raise DataFileError(f"{cfg.name}: {path} is gzip-compressed but not named *.gz: rename "
                                "it to end in .gz")
        try:
            head = zlib.decompressobj(16 + zlib.MAX_WBITS).decompress(head, 1 << 16)
        except zlib.error as e:
            raise DataFileError(f"{cfg.name}: {path} is a damaged gzip file ({e}): download it "
                                "again") from e
    elif path.suffix == ".gz":
        raise DataFileError(f"{cfg.name}: {path} is named *.gz but is not gzip-compressed: rename "
                            "it without .gz")
    if not head.strip():
        raise DataFileError(f"{cfg.name}: {path} holds no data: {_fetch_hint(cfg)}")
    text_ok = b"\x00" not in head and _utf8_prefix_ok(head)
    if not text_ok:
        raise DataFileError(f"{cfg.name}: {path} is not UTF-8 text (binary content?) but {fmt} "
                            "reads text: set config.data.format to the file's format (e.g. "
                            "'parquet') or fix config.data.path")
    whole = len(head) < (1 << 16) and not path.suffix == ".gz"
    if cfg.format == "csv" and whole and len([ln for ln in head.splitlines() if ln.strip()]) < 2:
        raise DataFileError(f"{cfg.name}: {path} has a header line but no data rows: "
                            f"{_fetch_hint(cfg)}")


def _utf8_prefix_ok(data: bytes) -> bool:
    """Whether ``data`` is UTF-8 up to a character cut at its end."""
    for cut in range(4):
        try:
            data[: len(data) - cut].decode("utf-8")
            return True
        except UnicodeDecodeError:
            continue
    return False


def parse_error_message(cfg, error: BaseException) -> str:
    """One line for a polars error while reading ``cfg``'s raw file."""
    first = " ".join(str(error).split("\n\n")[0].split())[:240]
    where = cfg.path if cfg.path else cfg.format
    return (f"{cfg.name}: cannot read {where} as {cfg.format} ({type(error).__name__}: {first}): "
            "check config.data.format, separator, columns.* and time_format against the file")


def read_source(cfg) -> pl.LazyFrame:
    """LazyFrame ``(user, item, time int64, row uint32)`` for the data config ``cfg``."""
    if cfg.format not in FORMATS:
        raise ValueError(f"config.data.format={cfg.format!r} is unknown: use one of {list(FORMATS)}")
    if cfg.format == "synthetic":
        return synthetic.generate_frame(cfg.synthetic).lazy()
    path = raw_path(cfg)
    check_file(cfg, path)
    try:
        return _read(cfg, path)
    except pl.exceptions.PolarsError as e:
        raise DataFileError(parse_error_message(cfg, e)) from e


def _read(cfg, path: Path) -> pl.LazyFrame:
    if cfg.format == "user_item":
        return _read_user_item(path)
    if cfg.format == "user_items":
        return _read_user_items(path)
    if cfg.format == "snap_gowalla":
        lf = pl.scan_csv(path, separator="\t", has_header=False, new_columns=list(_SNAP_SCHEMA),
                         schema=_SNAP_SCHEMA, quote_char=None)
        columns = dict(user="user", item="location_id", time="check_in_time")
        return _standardise(lf, cfg, columns, path, time_format=_SNAP_TIME_FORMAT)
    if cfg.format == "csv":
        lf = pl.scan_csv(path, separator=_separator(cfg.separator), infer_schema_length=10_000)
    else:
        lf = pl.scan_parquet(path)
    columns = dict(user=cfg.columns.user, item=cfg.columns.item, time=cfg.columns.time)
    return _standardise(lf, cfg, columns, path, time_format=cfg.time_format)


def _separator(sep: str) -> str:
    sep = {"\\t": "\t", "tab": "\t"}.get(sep, sep)
    if len(sep) != 1:
        raise ValueError(f"config.data.separator={sep!r} must be one character (e.g. ',' or '\\t')")
    return sep


def _standardise(lf: pl.LazyFrame, cfg, columns: dict, path: Path, time_format) -> pl.LazyFrame:
    """Checks names and types, applies row filters, returns ``(user, item, time, row)``."""
    schema = lf.collect_schema()
    wanted = dict(columns)
    if cfg.format != "snap_gowalla":
        if cfg.min_rating is not None:
            wanted["rating"] = cfg.columns.rating
        if cfg.event_value is not None:
            wanted["event"] = cfg.columns.event
    missing = {k: v for k, v in wanted.items() if v is None or v not in schema}
    if missing:
        keys = ", ".join(f"config.data.columns.{k}={v!r}" for k, v in missing.items())
        names = [n if len(n) <= 40 else n[:37] + "..." for n in schema.names()[:20]]
        more = f" and {len(schema.names()) - 20} more" if len(schema.names()) > 20 else ""
        raise DataFileError(f"{cfg.name}: {path} has columns {names}{more}; expected {keys} "
                            f"(set these keys to the file's column names)")
    for key in ("user", "item"):
        dtype = schema[wanted[key]]
        if not (dtype.is_integer() or _is_text(dtype)):
            raise ValueError(f"{cfg.name}: column {wanted[key]!r} (config.data.columns.{key}) has "
                             f"type {dtype}; ids must be integers or strings")
    time = _time_expr(pl.col(wanted["time"]), schema[wanted["time"]], time_format, cfg)
    lf = lf.with_row_index("row")
    if "rating" in wanted:
        if not schema[wanted["rating"]].is_numeric():
            raise ValueError(f"{cfg.name}: rating column {wanted['rating']!r} has type "
                             f"{schema[wanted['rating']]}, not numeric: fix config.data.columns.rating")
        lf = lf.filter(pl.col(wanted["rating"]) > cfg.min_rating)
    if "event" in wanted:
        lf = lf.filter(pl.col(wanted["event"]) == cfg.event_value)
    ids = [pl.col(wanted[k]).cast(pl.String) if _is_text(schema[wanted[k]])
           else pl.col(wanted[k]) for k in ("user", "item")]
    lf = lf.select(ids[0].alias("user"), ids[1].alias("item"), time.alias("time"), "row")
    return lf.drop_nulls(["user", "item", "time"])


def _is_text(dtype) -> bool:
    """String-like id columns (categorical / enum ids are read as their strings)."""
    return dtype == pl.String or isinstance(dtype, (pl.Categorical, pl.Enum))


def _time_expr(col: pl.Expr, dtype, time_format, cfg) -> pl.Expr:
    """An int64 expression ordering like the time column (see module docstring)."""
    if dtype.is_integer():
        return col.cast(pl.Int64)
    if isinstance(dtype, pl.Datetime) or dtype == pl.Datetime:
        return col.cast(pl.Int64)
    if dtype == pl.Date:
        return col.cast(pl.Int32).cast(pl.Int64)
    if dtype.is_float():
        return (col * 1000.0).round().cast(pl.Int64)  # keep sub-second order (ms)
    if dtype == pl.String:
        return col.str.to_datetime(time_format, strict=True).cast(pl.Int64)
    raise ValueError(f"{cfg.name}: time column {cfg.columns.time!r} has type {dtype}; expected "
                     f"integer, float, datetime, date or string: fix config.data.columns.time")


def _id_dtype(tokens: list[str]):
    """Int64 when every sampled token is an integer, else String (ids stay exact)."""
    return pl.Int64 if all(t.lstrip("-").isdigit() for t in tokens) else pl.String


def _head_tokens(path: Path, n_lines: int = 1000) -> list[str]:
    opener = gzip.open if path.suffix == ".gz" else open
    tokens: list[str] = []
    with opener(path, "rt") as f:
        for _, line in zip(range(n_lines), f):
            tokens.extend(line.split())
    return tokens


def _read_lines(path: Path) -> pl.LazyFrame:
    """Non-empty lines, fields separated by single spaces (tabs / runs of blanks folded)."""
    # One string column per line: \x1f never occurs in these files, quotes are not special.
    lf = pl.scan_csv(path, has_header=False, separator="\x1f", quote_char=None,
                     new_columns=["line"], schema={"line": pl.String})
    line = pl.col("line").str.replace_all(r"\s+", " ").str.strip_chars()
    return lf.select(line.alias("line")).filter(pl.col("line") != "")


def _read_user_item(path: Path) -> pl.LazyFrame:
    """``user item`` per line, each user's lines in time order (SASRec / BERT4Rec data files)."""
    dtype = _id_dtype(_head_tokens(path))
    parts = pl.col("line").str.split_exact(" ", 1)
    lf = _read_lines(path).with_row_index("row")
    return lf.select(
        parts.struct.field("field_0").cast(dtype).alias("user"),
        parts.struct.field("field_1").cast(dtype).alias("item"),
        pl.col("row").cast(pl.Int64).alias("time"),
        "row",
    ).drop_nulls(["user", "item"])


def _read_user_items(path: Path) -> pl.LazyFrame:
    """``user item1 item2 ...`` per line, items in time order (S3-Rec data files)."""
    dtype = _id_dtype(_head_tokens(path))
    tokens = pl.col("line").str.split(" ")
    lf = _read_lines(path)
    lf = lf.select(tokens.list.first().cast(dtype).alias("user"),
                   tokens.list.slice(1).alias("item"))
    lf = lf.explode("item").filter(pl.col("item").is_not_null() & (pl.col("item") != ""))
    lf = lf.with_row_index("row")
    return lf.select("user", pl.col("item").cast(dtype), pl.col("row").cast(pl.Int64).alias("time"),
                     "row")

"""Readers: turn each data source into numbered rows (plain dicts). The only stage besides the
writer that touches disk.

A row that cannot be parsed comes out as a RowError in its place, so the caller decides whether to
stop or to count it and go on; rows keep their index either way.
"""

import codecs
import csv
import glob
import hashlib
import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from sftprep.drop_reasons import DropReason
from sftprep.errors import RowError, SftprepError
from sftprep.source_settings import HUB_KEYS, entry_path, entry_settings, hub_arguments
from sftprep.stages.json_array import JSON_WHITESPACE, UnparsedItem, iter_json_array
from sftprep.stages.json_errors import json_problem, limit_error

FILE_KINDS = {
    ".json": "json",
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
    ".parquet": "parquet",
    ".csv": "csv",
    ".arrow": "arrow",
}
BATCH_ROWS = 1024
UTF8_BOM = b"\xef\xbb\xbf"
CSV_FIELD_LIMIT = (
    64 << 20
)  # bytes per CSV field (Python's default, 128 KiB, is below real documents)
csv.field_size_limit(CSV_FIELD_LIMIT)


@dataclass(frozen=True)
class Source:
    """One input: a file, a save_to_disk folder or a hub dataset name."""

    path: str
    kind: str
    """json | jsonl | parquet | csv | arrow | saved | hub"""
    settings: dict = field(default_factory=dict, compare=False)
    """The per-source keys of its `sources` entry (source_settings.py); shared by a glob's files."""


def resolve_sources(entries: tuple[str | dict, ...], flag: str = "SOURCE") -> list[Source]:
    """Expand globs and check that every source exists; report all missing ones at once."""
    found, missing = [], []
    for entry in entries:
        spec, settings = entry_path(entry), entry_settings(entry)
        if any(c in spec for c in "*?["):
            matches = sorted(p for p in glob.glob(spec, recursive=True) if Path(p).is_file())
            if not matches:
                missing.append(f"{spec} (the pattern matches no file)")
            if "take" in settings and len(matches) > 1:
                raise SftprepError(
                    f"{flag}: {spec} matches {len(matches)} files and asks to take {settings['take']} "
                    "rows; give each file its own entry (take counts the rows of one file), or use fraction"
                )
            found.extend(replace(_file_source(m), settings=settings) for m in matches)
            continue
        path = Path(spec)
        if path.is_dir():
            found.append(replace(_folder_source(path), settings=settings))
        elif path.is_file():
            found.append(replace(_file_source(spec), settings=settings))
        elif _looks_like_hub_name(spec):
            found.append(Source(spec, "hub", settings))
        else:
            missing.append(f"{spec} (no such file or folder)")
    if missing:
        raise SftprepError(f"{flag}: cannot read " + "; ".join(missing))
    if local := [
        f"{s.path} ({', '.join(k for k in HUB_KEYS if k in s.settings)})"
        for s in found
        if s.kind != "hub" and any(k in s.settings for k in HUB_KEYS)
    ]:
        raise SftprepError(
            f"{flag}: {'; '.join(local)}: name, split, revision and data_files are for hub "
            "datasets, and this is a local source; remove them (a local file is one split)"
        )
    found = _once(found, flag)
    bad = [s.path for s in found if s.kind == "unknown"]
    if bad:
        raise SftprepError(
            f"{flag}: unsupported file type for {', '.join(bad)}; use .json, .jsonl, .parquet, .csv or .arrow"
        )
    return found


def _once(sources: list[Source], flag: str) -> list[Source]:
    """Each file or folder once: the same real path reached twice (two specs, overlapping globs,
    symlinks) would silently duplicate its rows, so it is an error naming both spellings."""
    first: dict[str, str] = {}
    repeated = []
    for source in sources:
        key = _identity(source)
        if key in first:
            repeated.append(f"{source.path} (the same as {first[key]})")
        else:
            first[key] = source.path
    if repeated:
        raise SftprepError(
            f"{flag}: {'; '.join(repeated[:5])} given more than once; list each source once "
            "(a glob or symlink may reach a file twice)"
        )
    return sources


def same_sources(a: list[Source], b: list[Source]) -> list[str]:
    """Paths of `b` that are also sources in `a` (by real path)."""
    seen = {_identity(s) for s in a}
    return [s.path for s in b if _identity(s) in seen]


def _identity(source: Source) -> str:
    """What makes two sources the same: the real path of a file or folder, a hub name with its
    load_dataset arguments (two splits of one dataset are two sources)."""
    if source.kind == "hub":
        return f"{source.path} {json.dumps(hub_arguments(source.settings), sort_keys=True)}"
    return os.path.realpath(source.path)


def _looks_like_hub_name(spec: str) -> bool:
    return spec.count("/") <= 1 and not spec.startswith((".", "/")) and not Path(spec).suffix


def _file_source(path: str) -> Source:
    return Source(path, FILE_KINDS.get(Path(path).suffix.lower(), "unknown"))


def _folder_source(path: Path) -> Source:
    if (path / "state.json").is_file():
        return Source(str(path), "saved")
    if (path / "dataset_dict.json").is_file():
        try:
            splits = json.loads((path / "dataset_dict.json").read_text()).get("splits", [])
        except (ValueError, AttributeError, UnicodeDecodeError):
            splits = ["SPLIT"]  # broken, but plainly a DatasetDict: the advice is the same
        raise SftprepError(
            f"{path} is a saved DatasetDict; pass one split's folder instead, e.g. "
            + ", ".join(str(path / s) for s in splits)
        )
    raise SftprepError(
        f"{path} is a folder but not a datasets.save_to_disk folder (no state.json); pass its files or a glob"
    )


def content_sha256(source: Source) -> str:
    """Hash of the source's bytes (every data file of a folder), or the hub dataset's fingerprint."""
    digest = hashlib.sha256()
    if source.kind == "hub":
        asked = json.dumps(hub_arguments(source.settings), sort_keys=True)
        digest.update(f"hub:{source.path}:{asked}:{_hub_dataset(source)._fingerprint}".encode())
        return digest.hexdigest()
    paths = [Path(source.path)] if source.kind != "saved" else _saved_files(Path(source.path))
    for path in paths:
        digest.update(path.name.encode() + b"\0")
        with open(path, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()


def iter_rows(source: Source) -> Iterator[dict | RowError]:
    """Yield every row of a source in order, or a RowError (without location) in place of a bad row."""
    reader = {
        "json": _json_rows,
        "jsonl": jsonl_rows,
        "parquet": _parquet_rows,
        "csv": _csv_rows,
        "arrow": lambda p: _arrow_rows([Path(p)]),
        "saved": lambda p: _arrow_rows(_saved_files(Path(p))),
    }.get(source.kind)
    return _hub_rows(source) if source.kind == "hub" else reader(source.path)


def _json_rows(path: str) -> Iterator[dict | RowError]:
    """A JSON array of objects (streamed, see json_array.py), one object, or JSON lines saved as .json."""
    with open(path, "rb") as handle:
        start = len(UTF8_BOM) if handle.read(len(UTF8_BOM)) == UTF8_BOM else 0
        handle.seek(start)  # a UTF-8 byte order mark is not data
        offset = _first_value_offset(handle)
        if offset is None:
            raise SftprepError(f"{path}: the file is empty; remove it or put data in it")
        handle.seek(offset)
        if handle.read(1) == b"[":
            handle.seek(start)
            yield from _json_array_rows(path, handle)
            return
        handle.seek(offset)
        first_line = handle.readline()
        more_follows = _first_value_offset(handle) is not None
    if more_follows and _is_json(first_line):
        yield from jsonl_rows(path)  # JSON lines saved as .json
        return
    hint = " (JSON lines whose first line is malformed? fix that line)" if more_follows else ""
    try:
        data = json.loads(Path(path).read_bytes().decode("utf-8-sig"))  # one object: one row
    except (RecursionError, ValueError) as err:
        if (row_error := limit_error(err, "the object")) is None:
            raise SftprepError(_json_file_problem(path, err, hint)) from None
        yield row_error
        return
    if not isinstance(data, dict):
        raise SftprepError(f"{path}: expected a JSON array of objects, got {type(data).__name__}")
    yield data


def _first_value_offset(handle) -> int | None:
    """Offset of the first byte from the handle's position on that is not JSON whitespace (None: none)."""
    offset = handle.tell()
    for block in iter(lambda: handle.read(1 << 16), b""):
        stripped = block.lstrip(JSON_WHITESPACE.encode())
        if stripped:
            return offset + len(block) - len(stripped)
        offset += len(block)
    return None


def _is_json(line: bytes) -> bool:
    try:
        json.loads(line)
    except (ValueError, RecursionError):
        return False
    return True


def _json_array_rows(path: str, handle) -> Iterator[dict | RowError]:
    with _json_errors(path):
        for item in iter_json_array(handle):
            if isinstance(item, UnparsedItem):
                yield limit_error(item.error, f"the item at line {item.line}")
            elif isinstance(item, dict):
                yield item
            else:
                yield RowError(
                    DropReason.BAD_ROW_TYPE, f"expected a JSON object, got {type(item).__name__}"
                )


@contextmanager
def _json_errors(path: str):
    """Turn a JSON array's parse failure into an SftprepError naming the file, the place and the fix."""
    try:
        yield
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise SftprepError(_json_file_problem(path, err)) from None


def _json_file_problem(path: str, err: ValueError, hint: str = "") -> str:
    """A whole-file JSON parse failure (bad UTF-8 or malformed JSON), naming the place and the fix."""
    if isinstance(err, UnicodeDecodeError):
        return f"{path}: {_undecodable(path, err.start)}"
    return f"{path}: malformed JSON at line {err.lineno}: {json_problem(err)}{hint}; fix the file"


def _first_bad_utf8(path: str) -> int:
    """Offset in the file of the first byte that does not decode as UTF-8 (-1: none)."""
    decoder = codecs.getincrementaldecoder("utf-8")()
    done = 0
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            pending = len(decoder.getstate()[0])  # bytes of a character cut by the last block
            try:
                decoder.decode(block)
            except UnicodeDecodeError as err:
                return done - pending + err.start
            done += len(block)
    cut = len(decoder.getstate()[0])  # a character the end of the file cuts short
    return done - cut if cut else -1


def _undecodable(path: str, offset: int) -> str:
    """Where the first byte that is not UTF-8 lies (byte offset, line) and what it is."""
    line, done = 1, 0
    with open(path, "rb") as handle:
        while done < offset:
            block = handle.read(min(1 << 20, offset - done))
            if not block:
                break
            line += block.count(b"\n")
            done += len(block)
        byte = handle.read(1)
    return (
        f"not valid UTF-8 at byte {offset:,} (line {line}, byte {byte!r}); the file is in another "
        "encoding: re-encode it as UTF-8 (e.g. iconv -f latin1 -t utf-8)"
    )


def jsonl_rows(
    path: str, start: int = 0, end: int | None = None, first_line: int = 1
) -> Iterator[dict | RowError]:
    """The rows of a JSON lines file (blank lines are not rows); with `start`/`end`, only the lines
    of that byte range (it begins and ends on line starts), `first_line` being the number of its
    first line, so that errors name the file's real line."""
    empty = True
    with open(path, "rb") as handle:
        handle.seek(start)
        at = start
        for line_no, line in enumerate(handle, start=first_line):
            if end is not None and at >= end:
                break
            at += len(line)
            if line_no == 1 and line.startswith(UTF8_BOM):
                line = line[len(UTF8_BOM) :]  # a UTF-8 byte order mark is not data
            if not line.strip():
                continue
            empty = False
            try:
                text = line.decode("utf-8")
                item = json.loads(text)
            except UnicodeDecodeError as err:
                yield RowError(
                    DropReason.INVALID_UTF8,
                    f"line {line_no} is not valid UTF-8 (byte {err.start} of the line, "
                    f"{line[err.start : err.start + 1]!r}); re-encode the file as UTF-8",
                )
                continue
            except json.JSONDecodeError as err:
                hint = " (the file looks cut off)" if not line.endswith(b"\n") else ""
                yield RowError(
                    DropReason.MALFORMED_JSON,
                    f"line {line_no} is not valid JSON: {json_problem(err, text)}{hint}; fix or remove the line",
                )
                continue
            except (RecursionError, ValueError) as err:
                yield limit_error(err, f"line {line_no}")
                continue
            if not isinstance(item, dict):
                yield RowError(
                    DropReason.BAD_ROW_TYPE,
                    f"line {line_no}: expected a JSON object, got {type(item).__name__}",
                )
                continue
            yield item
    if empty and start == 0 and end is None:
        raise SftprepError(f"{path}: the file is empty; remove it or put data in it")


def open_parquet(path: str) -> pq.ParquetFile:
    """A Parquet file opened for reading, or one line saying why it cannot be."""
    try:
        handle = pq.ParquetFile(path)
    except (pa.ArrowException, OSError) as err:
        raise SftprepError(f"{path}: not a readable Parquet file ({_one_line(err)})") from None
    refuse_duplicate_columns(path, handle.schema_arrow.names)
    return handle


def _parquet_rows(path: str) -> Iterator[dict]:
    handle = open_parquet(path)
    batches = handle.iter_batches(batch_size=BATCH_ROWS)
    for batch in read_or_refuse(batches, parquet_damaged(path)):
        yield from batch.to_pylist()


def parquet_damaged(path) -> str:
    return f"{path}: a damaged part of the Parquet file cannot be read"


def arrow_damaged(path) -> str:
    return f"{path}: the Arrow file is damaged or cut short"


def read_or_refuse(batches: Iterator, damaged: str) -> Iterator:
    """The batches of a reader; a read error (a damaged or cut file) is one line, `damaged` first."""
    while True:
        try:
            batch = next(batches, None)
        except (pa.ArrowException, OSError) as err:
            raise SftprepError(f"{damaged} ({_one_line(err)}); write the file again") from None
        if batch is None:
            return
        yield batch


def refuse_duplicate_columns(path, names: list[str]) -> None:
    """Two columns of one name: a row dict would keep one and silently lose the other."""
    if duplicates := sorted({n for n in names if names.count(n) > 1}):
        raise SftprepError(f"{path}: duplicate column names {', '.join(duplicates)}; rename them")


def _csv_rows(path: str) -> Iterator[dict | RowError]:
    with open(path, encoding="utf-8-sig", newline="") as handle:  # -sig: a BOM is not data
        reader = csv.reader(
            handle, strict=True
        )  # strict: a quote left open is an error, not a field to EOF
        try:
            header = next(reader, None)
            if not header:
                raise SftprepError(f"{path}: the file is empty; a CSV needs a header row")
            refuse_duplicate_columns(path, header)
            for values in _csv_records(reader):
                if isinstance(values, RowError):
                    yield values
                    continue
                if len(values) != len(header):
                    yield RowError(
                        DropReason.MALFORMED_CSV,
                        f"line {reader.line_num}: {len(values)} fields, the header has {len(header)}",
                    )
                    continue
                yield dict(zip(header, values))
        except UnicodeDecodeError:
            # The text layer decodes in blocks, so its offset is within a block: find the byte.
            raise SftprepError(f"{path}: {_undecodable(path, _first_bad_utf8(path))}") from None


def _csv_records(reader) -> Iterator[list | RowError]:
    """The reader's records; a field over CSV_FIELD_LIMIT is a row error, not a crash."""
    while True:
        start = reader.line_num + 1  # the line the next record starts on
        try:
            yield next(reader)
        except StopIteration:
            return
        except csv.Error as err:
            where = f"line {reader.line_num}"
            if "field larger than field limit" in str(err):
                detail = f"{err} (fields are limited to {CSV_FIELD_LIMIT // (1 << 20)} MiB)"
            elif "unexpected end of data" in str(err):
                where = f"line {start}"  # where the quote opened, not the end of the file
                detail = (
                    "a quoted field opens in this record and never closes: every line after it "
                    "up to the end would be one field; close the quote"
                )
            else:
                detail = f"{err}; quote the field or escape the quote"
            yield RowError(DropReason.MALFORMED_CSV, f"{where}: {detail}")


def arrow_batches(path: Path, mapped: bool = False) -> Iterator[pa.RecordBatch]:
    """The record batches of an Arrow IPC stream or file, read one at a time (never the whole
    table); `mapped`: memory-mapped, so that skipping batches reads nothing (a chunk's reader)."""
    opener = pa.memory_map if mapped else pa.OSFile
    with opener(str(path)) as handle:
        try:
            reader = pa.ipc.open_stream(handle)
        except pa.ArrowInvalid:
            reader = None
        if reader is not None:
            yield from reader
            return
    with opener(str(path)) as handle:
        try:
            reader = pa.ipc.open_file(handle)
        except pa.ArrowInvalid as err:
            raise SftprepError(f"{path}: not an Arrow IPC file ({_one_line(err)})") from None
        for i in range(reader.num_record_batches):
            yield reader.get_batch(i)


def _arrow_rows(paths: list[Path]) -> Iterator[dict]:
    for path in paths:
        for batch in read_or_refuse(arrow_batches(path), arrow_damaged(path)):
            refuse_duplicate_columns(path, batch.schema.names)
            for start in range(0, batch.num_rows, BATCH_ROWS):
                yield from batch.slice(start, BATCH_ROWS).to_pylist()


def _saved_files(folder: Path) -> list[Path]:
    """The data files a save_to_disk folder's state.json lists; a one-line error when it is broken."""
    state_path = folder / "state.json"
    try:
        state = json.loads(state_path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as err:
        raise SftprepError(
            f"{state_path}: not valid JSON ({_one_line(err)}); save the dataset again"
        ) from None
    files = state.get("_data_files") if isinstance(state, dict) else None
    if not isinstance(files, list) or not all(
        isinstance(f, dict) and isinstance(f.get("filename"), str) for f in files
    ):
        raise SftprepError(
            f"{state_path}: no `_data_files` list of {{filename}} entries; save the dataset again"
        )
    paths = [folder / f["filename"] for f in files]
    if missing := [p.name for p in paths if not p.is_file()]:
        raise SftprepError(
            f"{folder}: state.json lists {', '.join(missing)}, which the folder lacks; save the dataset again"
        )
    return paths


def source_stamp(source: Source) -> tuple:
    """Size and modification time of each file of a source: taken before the build hashes it and
    compared after it read it, so the manifest's sha256 is of the rows the build holds."""
    if source.kind == "hub":
        return ()
    paths = [Path(source.path)] if source.kind != "saved" else _saved_files(Path(source.path))
    return tuple((str(p), st.st_size, st.st_mtime_ns) for p in paths for st in [p.stat()])


def require_unchanged(source: Source, stamp: tuple) -> None:
    """A SftprepError when the source changed while the build read it."""
    if source_stamp(source) != stamp:
        raise SftprepError(
            f"{source.path}: changed while the build read it (size or modification time), so the build "
            "would not match its manifest; rerun once nothing writes it"
        )


def _one_line(err: Exception) -> str:
    return " ".join(str(err).split())[:200]


def _hub_dataset(source: Source):
    """The hub dataset of a source, loaded with its own subset, split, revision and data_files."""
    name = source.path
    if any(
        os.environ.get(v, "").lower() in ("1", "true", "yes")
        for v in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE")
    ):
        raise SftprepError(
            f"{name}: not a local file or folder, and the hub is off (HF_HUB_OFFLINE/HF_DATASETS_OFFLINE is set); "
            "download the dataset first and pass its files, or unset the variable"
        )
    try:
        import datasets

        return datasets.load_dataset(name, **hub_arguments(source.settings))
    except Exception as err:
        raise SftprepError(
            f"{name}: not a local file or folder, and the hub dataset could not be loaded "
            f"({type(err).__name__}: {str(err).splitlines()[0][:200] if str(err) else ''}); "
            "check the name, or download it first and pass the files"
        ) from None


def _hub_rows(source: Source) -> Iterator[dict]:
    yield from _hub_dataset(source)

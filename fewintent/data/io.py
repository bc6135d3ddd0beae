"""Readers for the intent file formats: JSONL, CSV/TSV, Rasa ``nlu.yml`` and HF ``datasets`` (see ARCHITECTURE.md)."""

from __future__ import annotations

import csv
import io
import json
import re
import sys
import warnings
from collections.abc import Iterator, Sequence
from functools import cache
from pathlib import Path
from typing import Any

from fewintent.data.intentset import DEFAULT_OOS_LABEL, MAX_TEXT_CHARS, IntentSet
from fewintent.errors import FewIntentError, FewIntentWarning

TEXT_COLUMNS = ("text",)
INTENT_COLUMNS = ("intent", "label", "intents", "labels")
"""The intent column; a row's value is one name, names joined by '+', or (JSONL) a list of names (multi-label)."""
JSONL_EXTENSIONS = (".jsonl", ".json", ".ndjson")
# Files larger than this are almost certainly not a few-shot support set or a test set.
MAX_FILE_BYTES = 512 * 1024 * 1024
# Rasa entity markup: "[Berlin](city)" or "[Berlin]{"entity": "city"}" -> "Berlin"
_RASA_ENTITY = re.compile(r"\[([^\]]+)\](\([^)]*\)|\{[^}]*\})")
JsonlRecord = tuple[int, dict[str, Any]]
"""One JSON Lines object and its 1-based line number."""


def read_intent_file(
    path: str | Path,
    *,
    oos_label: str = DEFAULT_OOS_LABEL,
    for_training: bool = True,
    text_column: str | None = None,
    intent_column: str | None = None,
) -> IntentSet:
    """Read and validate an intent file; the format comes from the extension (or the content).

    Example:
        >>> examples = read_intent_file("data/demo_company.jsonl")  # doctest: +SKIP
    """
    return read_intent_file_with_records(
        path, oos_label=oos_label, for_training=for_training, text_column=text_column, intent_column=intent_column
    )[0]


def read_intent_file_with_records(
    path: str | Path,
    *,
    oos_label: str = DEFAULT_OOS_LABEL,
    for_training: bool = True,
    text_column: str | None = None,
    intent_column: str | None = None,
) -> tuple[IntentSet, list[JsonlRecord]]:
    """``read_intent_file`` plus the file's JSON objects (empty for CSV and Rasa), read once.

    For callers that need fields beyond text and intent, such as the corpus registry's ``domain``.
    """
    p = Path(path)
    content = _read_text(p)
    if not content.strip():
        raise FewIntentError(f"{p}: the file is empty")
    notes: list[str] = []
    records, rows = _file_rows(p, content, text_column, intent_column, notes)
    data = IntentSet.from_pairs(rows, oos_label=oos_label, source=str(p), for_training=for_training)
    data.warnings += notes
    return data, records


def _file_rows(
    p: Path, content: str, text_column: str | None, intent_column: str | None, notes: list[str]
) -> tuple[list[JsonlRecord], Iterator[Any]]:
    fmt = _detect_format(p, content)
    if fmt == "jsonl":
        records = jsonl_records(p, content)
        return records, _jsonl_rows(records, p, text_column, intent_column)
    if fmt == "csv":
        return [], _csv_rows(content, p, text_column, intent_column, notes)
    return [], _rasa_rows(content, p, notes)


INTENT_SUFFIXES = (".jsonl", ".csv", ".tsv", ".yml", ".yaml")


def read_intent_files(
    paths: Sequence[str | Path], *, oos_label: str = DEFAULT_OOS_LABEL, for_training: bool = True
) -> IntentSet:
    """Several intent files, or folders of them (a Rasa project's ``data/nlu/*.yml``), read as one set: cleaning
    (duplicates, a text under two intents) runs across files. In a folder, YAML without an ``nlu:`` list (Rasa
    stories, rules, domain) is skipped with a note.

    Example:
        >>> examples = read_intent_files(["data/nlu"])  # doctest: +SKIP
    """
    files: list[tuple[Path, bool]] = []  # (file, found in a folder)
    for path in map(Path, paths):
        if path.is_dir():
            found = sorted(f for f in path.rglob("*") if f.is_file() and f.suffix.lower() in INTENT_SUFFIXES)
            if not found:
                raise FewIntentError(f"{path}: a folder with no intent files ({', '.join(INTENT_SUFFIXES)})")
            files += [(f, True) for f in found]
        else:
            files.append((path, False))
    if len(files) == 1 and not files[0][1]:
        return read_intent_file(files[0][0], oos_label=oos_label, for_training=for_training)
    rows: list[Any] = []
    notes: list[str] = []
    for f, in_folder in files:
        content = _read_text(f)
        if in_folder and f.suffix.lower() in (".yml", ".yaml") and not re.search(r"(?m)^nlu:", content):
            notes.append(f"{f}: skipped (no 'nlu:' list: Rasa stories, rules or domain)")
            continue
        if not content.strip():
            raise FewIntentError(f"{f}: the file is empty")
        rows += _file_rows(f, content, None, None, notes)[1]
    source = ", ".join(str(f) for f, _ in files)
    data = IntentSet.from_pairs(rows, oos_label=oos_label, source=source, for_training=for_training)
    data.warnings += notes
    return data


def jsonl_records(path: str | Path, content: str | None = None) -> list[JsonlRecord]:
    """The objects of a JSON Lines file, each with its 1-based line number; blank lines are skipped.

    Every line is parsed before this returns, so a malformed line fails before any work is done, with a
    ``FewIntentError`` naming ``path:line``. ``content`` is the file's text when the caller has read it already.

    Example:
        >>> [obj["intent"] for _, obj in jsonl_records("data/demo_company.jsonl")][:1]  # doctest: +SKIP
        ['book_repair']
    """
    p = Path(path)
    if content is None:
        content = _read_text(p)
    records: list[JsonlRecord] = []
    # JSON Lines ends a record at "\n" only (what iterating over the open file does): U+2028 is valid inside a string.
    for lineno, line in enumerate(content.split("\n"), 1):
        line = line.removeprefix("\ufeff")  # files joined with `cat` keep each one's byte order mark
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except RecursionError as e:
            raise FewIntentError(f"{p}:{lineno}: not valid JSON (nested too deeply)") from e
        except json.JSONDecodeError as e:
            hint = "; a .json file must hold one object per line (JSON Lines)" if line.strip() in ("[", "{") else ""
            raise FewIntentError(f"{p}:{lineno}: not valid JSON ({e.msg}){hint}") from e
        if not isinstance(obj, dict):
            raise FewIntentError(f'{p}:{lineno}: expected an object like {{"text": ..., "intent": ...}}')
        records.append((lineno, obj))
    return records


def _read_text(p: Path) -> str:
    """A text file's content (UTF-8, a BOM dropped), refused with a clear message when it cannot be read.

    At most ``MAX_FILE_BYTES`` are read, whatever the file claims to be: a device or a pipe (``/dev/zero``,
    ``<(yes)``) reports no size and never ends."""
    if not p.exists():
        raise FewIntentError(f"{p}: no such file")
    if p.is_dir():
        raise FewIntentError(f"{p}: is a directory, expected an intent file (.jsonl, .csv or Rasa .yml)")
    if p.stat().st_size > MAX_FILE_BYTES:
        too_big = f"{p.stat().st_size / 2**20:.0f} MiB is larger than the {MAX_FILE_BYTES >> 20} MiB limit"
        raise FewIntentError(f"{p}: {too_big}")
    chunks: list[bytes] = []
    size = 0
    with open(p, "rb") as f:
        while chunk := f.read(1 << 20):
            if b"\x00" in chunk:
                raise FewIntentError(
                    f"{p}: looks binary (NUL bytes), expected an intent file (.jsonl, .csv or Rasa .yml)"
                )
            chunks.append(chunk)
            size += len(chunk)
            if size > MAX_FILE_BYTES:
                raise FewIntentError(f"{p}: larger than the {MAX_FILE_BYTES >> 20} MiB limit")
    try:
        return b"".join(chunks).decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise FewIntentError(f"{p}: not UTF-8 text (undecodable byte at offset {e.start}); save it as UTF-8") from e


MAX_MESSAGES = 1_000_000
MAX_LINE_BYTES = 1 << 20
"""Longest line of a messages file read whole; a longer one is a runaway row (or not text), not a message."""


def read_messages(path: str | Path) -> list[str]:
    """Unlabelled messages: one per line, or JSONL with a ``text`` field; ``-`` reads standard input.

    Read line by line, so a huge or endless input fails on its first bad line instead of filling memory. Blank
    lines are skipped; a line longer than ``MAX_LINE_BYTES`` is cut to ``MAX_TEXT_CHARS`` with a warning; a file
    with no message, one that is not UTF-8 text, or more than ``MAX_MESSAGES`` lines is refused.
    """
    p = Path(path)
    if str(path) == "-":
        return _messages(getattr(sys.stdin, "buffer", sys.stdin), p)
    if p.is_dir():
        raise FewIntentError(f"{p}: is a directory, expected a file of messages")
    try:
        f = open(p, "rb")  # noqa: SIM115 - closed below
    except FileNotFoundError as e:
        raise FewIntentError(f"{p}: no such file") from e
    with f:
        return _messages(f, p)


def _messages(f: Any, p: Path) -> list[str]:
    texts: list[str] = []
    lineno = n_cut = size = 0
    while line := f.readline(MAX_LINE_BYTES):
        lineno += 1
        size += len(line)
        cut = False
        if len(line) == MAX_LINE_BYTES and not line.endswith(b"\n" if isinstance(line, bytes) else "\n"):
            while (rest := f.readline(MAX_LINE_BYTES)) and size <= MAX_FILE_BYTES:  # skip the runaway line's rest
                size += len(rest)
                _check_binary(rest, p)
                if rest.endswith(b"\n" if isinstance(rest, bytes) else "\n"):
                    break
            line, cut = line[: 4 * MAX_TEXT_CHARS], True  # UTF-8: at most 4 bytes a character
            n_cut += 1
        if size > MAX_FILE_BYTES:
            raise FewIntentError(f"{p}: more than {MAX_FILE_BYTES >> 20} MiB of text; split the file")
        text = _decode_line(line, p, lineno, cut=cut)
        if not text.strip():
            continue
        if text.lstrip().startswith("{"):
            try:
                message = json.loads(text)["text"]
            except RecursionError as e:
                raise FewIntentError(f"{p}:{lineno}: not valid JSON (nested too deeply)") from e
            except (ValueError, KeyError, TypeError) as e:
                raise FewIntentError(f"{p}:{lineno}: expected a JSON object with a 'text' field") from e
            if not isinstance(message, str):
                raise FewIntentError(f"{p}:{lineno}: 'text' must be a string, got {type(message).__name__}")
            texts.append(message)
        else:
            texts.append(text.strip())
        if len(texts) > MAX_MESSAGES:
            raise FewIntentError(f"{p}: more than {MAX_MESSAGES} messages; split the file")
    if not texts:
        raise FewIntentError(f"{p}: no messages (the file is empty or blank)")
    if n_cut:
        warnings.warn(
            f"{p}: cut {n_cut} line(s) longer than {MAX_LINE_BYTES >> 20} MiB to their first {MAX_TEXT_CHARS} "
            "characters",
            FewIntentWarning,
            stacklevel=3,
        )
    return texts


def _check_binary(line: bytes | str, p: Path) -> None:
    if (b"\x00" in line) if isinstance(line, bytes) else ("\x00" in line):
        raise FewIntentError(f"{p}: looks binary (NUL bytes), expected one message per line or JSONL")


def _decode_line(line: bytes | str, p: Path, lineno: int, *, cut: bool) -> str:
    """One line as text (a BOM on the first dropped); a runaway line cut mid-character keeps what decodes."""
    if isinstance(line, str):
        text = line
    else:
        try:
            text = line.decode("utf-8")
        except UnicodeDecodeError as e:
            if not cut or e.start < len(line) - 4:
                raise FewIntentError(
                    f"{p}:{lineno}: not UTF-8 text (undecodable byte at column {e.start + 1}); save it as UTF-8"
                ) from e
            text = line[: e.start].decode("utf-8")
    _check_binary(text, p)
    text = text.removeprefix("\ufeff")  # the first line's, or a file's joined on with `cat`
    return text[:MAX_TEXT_CHARS] if cut else text


def _detect_format(p: Path, content: str) -> str:
    ext = p.suffix.lower()
    if ext in JSONL_EXTENSIONS:
        return "jsonl"
    if ext in (".csv", ".tsv"):
        return "csv"
    if ext in (".yml", ".yaml"):
        return "rasa"
    head = content.lstrip()[:200]
    if head.startswith("{"):
        return "jsonl"
    if head.startswith(("version:", "nlu:")):
        return "rasa"
    return "csv"


def _pick(columns: list[str], wanted: str | None, candidates: tuple[str, ...], what: str, p: Path) -> str:
    if wanted is not None:
        if wanted not in columns:
            raise FewIntentError(f"{p}: no column '{wanted}' (columns: {', '.join(columns)})")
        return wanted
    for c in candidates:
        if c in columns:
            return c
    raise FewIntentError(
        f"{p}: no {what} column; expected one of {', '.join(candidates)} (columns: {', '.join(columns) or 'none'})"
    )


def _jsonl_rows(
    records: list[JsonlRecord], p: Path, text_col: str | None, intent_col: str | None
) -> Iterator[tuple[Any, Any]]:
    columns = list(dict.fromkeys(k for _, r in records[:100] for k in r))
    tcol = _pick(columns, text_col, TEXT_COLUMNS, "text", p)
    icol = _pick(columns, intent_col, INTENT_COLUMNS, "intent", p)
    for lineno, r in records:
        if tcol not in r or icol not in r:
            raise FewIntentError(f"{p}:{lineno}: missing '{tcol}' or '{icol}'")
        text, intent = r[tcol], r[icol]
        if text is not None and not isinstance(text, str):
            raise FewIntentError(f"{p}:{lineno}: '{tcol}' must be a string, got {type(text).__name__} {text!r:.40}")
        if isinstance(intent, list):
            if not all(isinstance(x, str) for x in intent):
                raise FewIntentError(
                    f"{p}:{lineno}: '{icol}' must be a list of intent names (strings), got {intent!r:.60}"
                )
        elif intent is not None and (isinstance(intent, bool) or not isinstance(intent, (str, int))):
            raise FewIntentError(
                f"{p}:{lineno}: '{icol}' must be a string or a list of strings, got {type(intent).__name__}"
            )
        yield text, intent


def _csv_rows(
    content: str, p: Path, text_col: str | None, intent_col: str | None, notes: list[str]
) -> Iterator[tuple[Any, Any]]:
    # The csv module refuses fields over 131,072 characters; long texts are cut by IntentSet like JSONL's are.
    csv.field_size_limit(max(csv.field_size_limit(), MAX_FILE_BYTES))
    delimiter = "\t" if p.suffix.lower() == ".tsv" else ","
    reader = csv.reader(io.StringIO(content), delimiter=delimiter)
    try:
        header = [h.strip() for h in next(reader)]
    except (StopIteration, csv.Error) as e:
        raise FewIntentError(f"{p}: could not read a CSV header ({e})") from e
    lowered = [h.lower() for h in header]
    if len(header) == 1 and any(sep in header[0] for sep in (";", "\t", "|")):
        sep = next(sep for sep in (";", "\t", "|") if sep in header[0])
        raise FewIntentError(
            f"{p}: the header has one column '{header[0][:60]}': the file looks {sep!r}-separated; "
            "fewintent reads comma-separated CSV (or .tsv): re-save it with commas"
        )
    tcol = _pick(lowered, text_col.lower() if text_col else None, TEXT_COLUMNS, "text", p)
    icol = _pick(lowered, intent_col.lower() if intent_col else None, INTENT_COLUMNS, "intent", p)
    ti, ii = lowered.index(tcol), lowered.index(icol)
    headers = 0
    try:
        for row in reader:
            if not row:
                continue
            if len(row) <= max(ti, ii):
                raise FewIntentError(f"{p}:{reader.line_num}: expected {len(header)} fields, found {len(row)}")
            if [c.removeprefix("\ufeff").strip().lower() for c in row] == lowered:  # files joined with `cat`
                headers += 1
                continue
            yield row[ti], row[ii]
    except csv.Error as e:
        raise FewIntentError(f"{p}:{reader.line_num}: malformed CSV ({e})") from e
    if headers:
        notes.append(f"skipped {headers} repeated header row(s) (files joined together?)")


@cache
def _string_loader() -> Any:
    """YAML without implicit typing: ``- intent: yes`` is the intent 'yes', not True; ``42`` is '42'. (PyYAML is
    imported here, on the first YAML file: a server never reads one.)"""
    import yaml

    class StringLoader(yaml.SafeLoader):
        pass

    StringLoader.yaml_implicit_resolvers = {}
    return StringLoader


def _rasa_rows(content: str, p: Path, notes: list[str]) -> Iterator[tuple[str, str]]:
    import yaml

    try:
        doc = yaml.load(content, Loader=_string_loader())  # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError as e:
        raise FewIntentError(f"{p}: not valid YAML ({str(e).splitlines()[0]})") from e
    if not isinstance(doc, dict) or not isinstance(doc.get("nlu"), list):
        raise FewIntentError(f"{p}: not a Rasa NLU file (expected a top-level 'nlu:' list of '- intent:' blocks)")
    skipped: dict[str, int] = {}
    for block in doc["nlu"]:
        if not isinstance(block, dict) or "intent" not in block:  # synonyms, regexes, lookup tables: not examples
            kind = next((k for k in ("synonym", "regex", "lookup") if isinstance(block, dict) and k in block), "other")
            skipped[kind] = skipped.get(kind, 0) + 1
            continue
        if not isinstance(block["intent"], str):
            raise FewIntentError(f"{p}: an intent name must be plain text, got {block['intent']!r:.60}")
        examples = block.get("examples", "")
        if not isinstance(examples, str):
            raise FewIntentError(f"{p}: intent '{block['intent']}' has no 'examples: |' block")
        for line in examples.splitlines():
            line = line.strip()
            if line.startswith("- "):
                line = line[2:]
            elif line == "-":
                line = ""
            yield _RASA_ENTITY.sub(r"\1", line), block["intent"]
    if skipped:
        what = ", ".join(f"{n} {kind} block{'s' * (n > 1)}" for kind, n in skipped.items())
        notes.append(f"{p}: skipped {what}: fewintent reads intent examples only (entities are not used)")


def load_hf_intents(
    name_or_path: str,
    *,
    split: str = "train",
    text_column: str = "text",
    intent_column: str = "intent",
    oos_label: str = DEFAULT_OOS_LABEL,
    for_training: bool = True,
    **load_kwargs: Any,
) -> IntentSet:
    """Read a Hugging Face ``datasets`` dataset (hub id or local path) through a column mapping.

    Integer labels with a ``ClassLabel`` feature are turned into their names. This reaches the network
    only for a hub id, and only when ``HF_HUB_OFFLINE`` is not set.

    Example:
        >>> s = load_hf_intents("PolyAI/banking77", split="train", intent_column="label")  # doctest: +SKIP
    """
    try:
        import datasets
    except ImportError as e:
        raise FewIntentError(f"reading '{name_or_path}' from the Hugging Face hub needs the 'datasets' package") from e
    try:
        ds = datasets.load_dataset(name_or_path, split=split, **load_kwargs)
    except Exception as e:  # datasets raises many types; all mean "could not get it"
        raise FewIntentError(f"could not load dataset '{name_or_path}' split '{split}': {e}") from e
    for col in (text_column, intent_column):
        if col not in ds.column_names:
            raise FewIntentError(f"dataset '{name_or_path}' has no column '{col}' (columns: {ds.column_names})")
    feature = ds.features[intent_column]
    names = getattr(feature, "names", None)
    # ClassLabel -1 means "no label": keep it empty so validation drops the row instead of mislabelling it.
    intents: list[Any] = [(names[i] if i >= 0 else None) if names is not None else i for i in ds[intent_column]]
    return IntentSet.from_pairs(
        zip(ds[text_column], intents),
        oos_label=oos_label,
        source=f"{name_or_path}[{split}]",
        for_training=for_training,
    )

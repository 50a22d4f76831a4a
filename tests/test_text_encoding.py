"""Every text file bench/ reads or writes is UTF-8, named in the call, never the locale's encoding.

Python's ``open`` / ``Path.read_text`` / ``Path.write_text`` default to the
locale's encoding (cp1252 on many Windows machines, ASCII under ``LANG=C``),
so a class name or a path with an accent would read back differently, or not
at all, on another machine. This test reads bench/'s source and fails on any
such call in text mode without ``encoding=``.
"""

import ast
from pathlib import Path

BENCH = Path(__file__).resolve().parent.parent / "bench"

# Methods that open a file in text mode by default: Path.open / read_text / write_text, pandas' read_csv / to_csv.
TEXT_METHODS = {"open", "read_text", "write_text", "read_csv", "to_csv"}
# Receivers whose .open is not a text file: PIL images, os-level descriptors, tar / zip archives.
NOT_TEXT_OPENERS = {"Image", "os", "tarfile", "zipfile"}


def _mode(call: ast.Call, position: int) -> str | None:
    """The call's mode argument (keyword ``mode`` or the ``position``-th positional) if it is a string literal."""
    for keyword in call.keywords:
        if keyword.arg == "mode" and isinstance(keyword.value, ast.Constant):
            return keyword.value.value
    if len(call.args) > position and isinstance(call.args[position], ast.Constant):
        return call.args[position].value
    return None


def locale_encoded_calls(source: str) -> list[tuple[int, str]]:
    """``(line, call)`` of each call in ``source`` that reads or writes text without ``encoding=``."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if not isinstance(node, ast.Call) or any(keyword.arg == "encoding" for keyword in node.keywords):
            continue
        function = node.func
        if isinstance(function, ast.Name) and function.id == "open":  # the builtin: open(path, mode)
            mode = _mode(node, 1)
        elif isinstance(function, ast.Attribute) and function.attr in TEXT_METHODS:
            receiver = function.value
            if isinstance(receiver, ast.Name) and receiver.id in NOT_TEXT_OPENERS:
                continue
            if function.attr == "to_csv" and not node.args:
                continue  # to_csv() with no target returns a string; nothing is written
            mode = _mode(node, 0) if function.attr == "open" else None
        else:
            continue
        if mode is not None and "b" in mode:
            continue  # bytes: no encoding involved
        found.append((node.lineno, ast.unparse(node)[:80]))
    return found


def test_the_check_finds_every_text_call_without_an_encoding():
    source = "\n".join([
        "path.read_text()",                          # 1: found
        "path.read_text(encoding='utf-8')",          # 2
        "path.write_text(text)",                     # 3: found
        "open(path)",                                # 4: found
        "open(path, 'rb')",                          # 5: bytes
        "open(path, 'a', buffering=1)",              # 6: found
        "path.open('w', newline='')",                # 7: found
        "path.open('wb')",                           # 8: bytes
        "Image.open(path)",                          # 9: an image
        "pd.read_csv(path, keep_default_na=False)",  # 10: found
        "table.to_csv(path, index=False)",           # 11: found
        "table.to_csv(index=False)",                 # 12: returns a string
        "os.open(path, os.O_CREAT)",                 # 13: a descriptor
        "write_text(path, text)",                    # 14: bench.atomic_files.write_text, UTF-8 itself
    ])
    assert [line for line, _ in locale_encoded_calls(source)] == [1, 3, 4, 6, 7, 10, 11]


def test_bench_reads_and_writes_every_text_file_as_utf8():
    offenders = [f"{path.relative_to(BENCH.parent)}:{line}: {call}"
                 for path in sorted(BENCH.rglob("*.py"))
                 for line, call in locale_encoded_calls(path.read_text(encoding="utf-8"))]
    assert offenders == [], "text read or written in the locale's encoding; add encoding=\"utf-8\":\n" + "\n".join(
        offenders)

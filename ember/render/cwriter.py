"""An indented text buffer for generating C, so generators never juggle whitespace by hand."""
from __future__ import annotations

import contextlib
import re
from typing import Iterator


class CWriter:
    def __init__(self, indent: int = 0) -> None:
        self._lines: list[str] = []
        self._indent = indent

    def line(self, text: str = "") -> None:
        self._lines.append(("    " * self._indent + text) if text else "")

    def lines(self, text: str) -> None:
        """Write a multi-line snippet, keeping its relative indentation."""
        for ln in text.strip("\n").splitlines():
            self.line(ln)

    @contextlib.contextmanager
    def block(self, header: str) -> Iterator[None]:
        """`header {` ... `}` with the body indented one level."""
        self.line(header + " {")
        self._indent += 1
        try:
            yield
        finally:
            self._indent -= 1
            self.line("}")

    @contextlib.contextmanager
    def loops(self, shape: tuple[int, ...], prefix: str = "i") -> Iterator[list[str]]:
        """Nested `for` loops over `shape`; yields the index variable names (outermost first)."""
        names = [f"{prefix}{d}" for d in range(len(shape))]
        opened = 0
        try:
            for name, extent in zip(names, shape):
                self.line(f"for (int64_t {name} = 0; {name} < {extent}; ++{name}) {{")
                self._indent += 1
                opened += 1
            yield names
        finally:
            for _ in range(opened):
                self._indent -= 1
                self.line("}")

    def text(self) -> str:
        return "\n".join(self._lines) + "\n"


def c_comment(text: str) -> str:
    """Text made safe to sit inside a C block comment: printable ASCII, no comment delimiters,
    no backslash and no trigraph (`??/` is a backslash in C11: a line splice)."""
    safe = "".join(ch if 32 <= ord(ch) < 127 else "?" for ch in text)
    safe = safe.replace("*/", "*_/").replace("/*", "/_*").replace("\\", "/")
    return re.sub(r"\?(?=\?)", "?_", safe)[:200]


def c_float(value: float, ctype: str = "float") -> str:
    """A C literal for a float value, including inf and nan."""
    import math
    if math.isnan(value):
        return "NAN" if ctype == "float" else "((double)NAN)"
    if math.isinf(value):
        return ("-" if value < 0 else "") + ("INFINITY" if ctype == "float" else "((double)INFINITY)")
    text = repr(float(value))
    return f"{text}f" if ctype == "float" else text


def c_literal(value, dtype) -> str:
    """A C literal of `dtype` for a Python/numpy scalar."""
    if dtype.is_float:
        return c_float(float(value), dtype.c)
    if dtype.name == "bool":
        return "1" if value else "0"
    v = int(value)
    if dtype.name == "i64":
        return "INT64_MIN" if v == -2**63 else f"INT64_C({v})"
    if dtype.name == "u64":
        return f"UINT64_C({v})"
    if dtype.name == "i32" and v == -2**31:
        return "INT32_MIN"
    return f"(({dtype.c}){v})" if v >= 0 else f"(({dtype.c})({v}))"

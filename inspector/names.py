"""Names from user data: the key grammar, path globs, and terminal-safe text (stdlib only).

Module names, dict keys and sow names can hold any character. Three rules keep them safe:

* **Keys.** A key is ``path``, ``path:method`` or ``path:method[index]``; the path joins
  names with ``/`` and the root path is ``/``. Inside a name (and a method), ``\\``,
  ``/``, ``:``, ``[`` and ``]`` are written with a backslash (``enc\\:dec``, ``a\\/b``),
  control and bidi characters as ``\\x1b``, ``\\u202e`` or ``\\U000e0001``, and an empty
  name as ``\\.``. :func:`parse_key` inverts :func:`format_key` for every name.
* **Globs.** ``*`` matches within one path segment, ``**`` across segments and ``?`` one
  character; every other character is literal (so a glob written as a key is displayed
  matches it). :class:`Glob` matches in time linear in the text, without backtracking.
* **Display.** :func:`safe` writes control, format (bidi), separator and surrogate
  characters as escapes, so nothing from user data reaches a terminal raw.
"""

from __future__ import annotations

import functools
import unicodedata
from collections.abc import Sequence

Path = tuple[str, ...]

_UNSAFE = frozenset({"Cc", "Cf", "Cs", "Zl", "Zp"})
_SPECIAL = "\\/:[]"


def _escape_char(c: str) -> str:
    n = ord(c)
    return f"\\x{n:02x}" if n < 0x100 else f"\\u{n:04x}" if n < 0x10000 else f"\\U{n:08x}"


def _unsafe(c: str) -> bool:
    return unicodedata.category(c) in _UNSAFE


def safe(text: object) -> str:
    """``str(text)`` with control, bidi/format, line/paragraph-separator and surrogate
    characters written as ``\\x1b``/``\\u202e``/``\\U000e0001`` escapes: safe to print to a
    terminal. Printable text is returned unchanged."""
    text = str(text)
    if text.isprintable():
        return text
    return "".join(_escape_char(c) if _unsafe(c) else c for c in text)


def quote(name: str) -> str:
    """One name as it appears in a key: ``\\ / : [ ]`` backslash-escaped, unsafe characters
    as ``\\xNN``/``\\uNNNN``/``\\UNNNNNNNN``, the empty name as ``\\.``."""
    if not name:
        return "\\."
    if name.isprintable() and not any(c in name for c in _SPECIAL):
        return name
    return "".join("\\" + c if c in _SPECIAL else _escape_char(c) if _unsafe(c) else c for c in name)


def format_path(path: Sequence[str]) -> str:
    """``('Encoder_0', 'Dense_1')`` -> ``'Encoder_0/Dense_1'``; the root ``()`` is ``'/'``."""
    return "/".join(map(quote, path)) if path else "/"


def format_key(path: Sequence[str], method: str | None = None, index: int | None = None) -> str:
    """The key of a variable (``method=None``) or of a captured call:
    ``format_key(('enc:dec',), '__call__', 1) == 'enc\\\\:dec:__call__[1]'``."""
    key = format_path(path)
    if method is None:
        if index is not None:
            raise ValueError("a key with an index needs a method")
        return key
    key += ":" + quote(method)
    return key if index is None else f"{key}[{index}]"


_HEX = {"x": 2, "u": 4, "U": 8}


def _tokens(text: str) -> list[tuple[str, bool]]:
    """``text`` as ``(character, escaped)`` pairs, escapes decoded (``\\.`` gives ``('', True)``)."""
    out: list[tuple[str, bool]] = []
    i, n = 0, len(text)
    while i < n:
        c = text[i]
        if c != "\\":
            out.append((c, False))
            i += 1
            continue
        if i + 1 >= n:
            raise ValueError(f"key {text!r} ends with a lone backslash (write a backslash as '\\\\')")
        e = text[i + 1]
        width = _HEX.get(e)
        if width is not None:
            digits = text[i + 2:i + 2 + width]
            try:
                if len(digits) != width:
                    raise ValueError
                out.append((chr(int(digits, 16)), True))
            except ValueError:
                raise ValueError(f"key {text!r}: '\\{e}' needs {width} hex digits") from None
            i += 2 + width
            continue
        out.append(("" if e == "." else e, True))
        i += 2
    return out


def _names(tokens: list[tuple[str, bool]]) -> Path:
    """Names between unescaped ``/`` (empty runs, as in ``'//'`` or a leading ``/``, are skipped)."""
    names: list[str] = []
    current: list[str] = []
    explicit = False  # the run holds an escape, so it is a name even if it decodes to ''
    for c, escaped in tokens:
        if c == "/" and not escaped:
            if current or explicit:
                names.append("".join(current))
            current, explicit = [], False
        else:
            current.append(c)
            explicit = explicit or escaped
    if current or explicit:
        names.append("".join(current))
    return tuple(names)


def parse_path(text: str) -> Path:
    """The inverse of :func:`format_path` (``'/'`` and ``''`` are the root)."""
    return _names(_tokens(text))


def parse_key(key: str) -> tuple[Path, str | None, int | None]:
    """``'enc\\\\:dec/Dense_0:__call__[1]'`` -> ``(('enc:dec', 'Dense_0'), '__call__', 1)``;
    a key without an unescaped ``:`` is a path: ``(path, None, None)``."""
    tokens = _tokens(key)
    colons = [i for i, (c, esc) in enumerate(tokens) if c == ":" and not esc]
    if not colons:
        return _names(tokens), None, None
    if len(colons) > 1:
        raise ValueError(f"key {key!r} has {len(colons)} ':'; a ':' inside a name is written '\\:' "
                         f"(e.g. {format_key(('enc:dec',), '__call__')!r})")
    path, rest = tokens[:colons[0]], tokens[colons[0] + 1:]
    index = None
    if rest and rest[-1] == ("]", False):
        opened = max((i for i, (c, esc) in enumerate(rest) if c == "[" and not esc), default=-1)
        digits = "".join(c for c, _ in rest[opened + 1:-1])
        if opened < 0 or not digits.isascii() or not digits.isdigit():
            raise ValueError(f"key {key!r}: the call index must be '[<digits>]' at the end")
        index, rest = int(digits), rest[:opened]
    if any(c in "/[]" and not esc for c, esc in rest):
        raise ValueError(f"key {key!r}: '/', '[' and ']' inside a method name are written '\\/', '\\[', '\\]'")
    if not rest:
        raise ValueError(f"key {key!r} has no method name after ':'")
    return _names(path), "".join(c for c, _ in rest), index


class Glob:
    """A path glob matched by simulating its automaton (time linear in the text).

    ``*`` matches characters other than ``/``, ``**`` any characters, ``?`` one character
    other than ``/``; everything else is literal. In the text, an escaped ``\\/`` is part
    of a name, not a separator, so ``*`` matches across it.
    """

    def __init__(self, pattern: str):
        self.pattern = pattern
        self._tokens: list[str] = []  # a literal character, or '*', '**', '?' (kinds in _wild)
        self._wild: list[bool] = []
        i = 0
        while i < len(pattern):
            if pattern.startswith("**", i):
                while pattern.startswith("*", i):
                    i += 1
                self._tokens.append("**")
                self._wild.append(True)
                continue
            c = pattern[i]
            self._tokens.append(c)
            self._wild.append(c in "*?")
            i += 1
        self._stars = [i for i, t in enumerate(self._tokens) if self._wild[i] and t in ("*", "**")]
        self._accept = 1 << len(self._tokens)
        self._masks: dict[tuple[str, bool], tuple[int, int]] = {}

    def _mask(self, c: str, sep: bool) -> tuple[int, int]:
        """For character ``c``: (tokens that consume it and move on, star tokens that absorb it)."""
        got = self._masks.get((c, sep))
        if got is None:
            step = loop = 0
            for i, (t, wild) in enumerate(zip(self._tokens, self._wild)):
                if not wild:
                    step |= (t == c) << i
                elif t == "?":
                    step |= (not sep) << i
                elif t == "**" or not sep:
                    loop |= 1 << i
            got = self._masks[(c, sep)] = (step, loop)
        return got

    def _close(self, state: int) -> int:
        for i in self._stars:  # a star may match nothing: skip over it (stars are in order)
            if state >> i & 1:
                state |= 1 << (i + 1)
        return state

    def match(self, text: str) -> bool:
        """True if the whole ``text`` matches."""
        state = self._close(1)
        escaped = False
        for c in text:
            sep = c == "/" and not escaped
            escaped = c == "\\" and not escaped
            step, loop = self._mask(c, sep)
            state = self._close(((state & step) << 1) | (state & loop))
            if not state:
                return False
        return bool(state & self._accept)

    def __repr__(self) -> str:
        return f"Glob({self.pattern!r})"


_glob = functools.lru_cache(maxsize=64)(Glob)


def is_glob(query: str) -> bool:
    """A query with ``*`` or ``?`` is a glob; anything else is a substring."""
    return "*" in query or "?" in query


def path_matches(path: str, query: str) -> bool:
    """True if ``path`` matches ``query``: the whole of it for a glob, else case-insensitively
    as a substring."""
    if is_glob(query):
        return _glob(query).match(path)
    return query.lower() in path.lower()

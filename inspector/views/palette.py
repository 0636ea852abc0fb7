"""The colours (and the code font) of every HTML view (static export and widget), defined once.

Each colour follows JupyterLab's theme variable where there is one and falls back to
a light or a dark value (GitHub's palette) elsewhere. Views use them as CSS custom
properties ``--fi-<name>`` (:func:`custom_properties`), or inline as :data:`INLINE`;
stylesheets (``static/tree.css``) name them only as ``var(--fi-<name>)``.
"""

from __future__ import annotations

# name -> (JupyterLab variable, light fallback, dark fallback)
PALETTE: dict[str, tuple[str, str, str]] = {
    "fg": ("--jp-content-font-color1", "#1f2328", "#e6edf3"),
    "bg": ("--jp-layout-color0", "#fff", "#0d1117"),
    "muted": ("--jp-content-font-color2", "#59636e", "#9198a1"),
    "line": ("--jp-border-color2", "#d1d9e0", "#3d444d"),
    "accent": ("--jp-brand-color1", "#0969da", "#4493f8"),
    "bad": ("--jp-error-color1", "#cf222e", "#f85149"),
    "add": ("--jp-success-color1", "#1a7f37", "#3fb950"),
    "chg": ("--jp-warn-color1", "#9a6700", "#d29922"),
    "hover": ("--jp-layout-color2", "#eef1f4", "#262c36"),
    "selected": ("--jp-brand-color3", "#ddf4ff", "#121d2f"),
    "flash": ("--jp-warn-color3", "#fff8c5", "#3b2e00"),
}

MONO = "var(--jp-code-font-family,ui-monospace,SFMono-Regular,Menlo,monospace)"
"""The code font, as ``--fi-mono``: JupyterLab's where it is defined."""

LIGHT: dict[str, str] = {name: light for name, (_, light, _) in PALETTE.items()}
DARK: dict[str, str] = {name: dark for name, (_, _, dark) in PALETTE.items()}
INLINE: dict[str, str] = {name: f"var({var},{light})" for name, (var, light, _) in PALETTE.items()}
"""``name -> 'var(--jp-..., #light)'``: for inline styles, where ``--fi-*`` may not be defined."""


def var(name: str) -> str:
    """``var(--fi-<name>)``, for CSS inside an element that has :func:`custom_properties`."""
    if name not in PALETTE:
        raise ValueError(f"no colour {name!r} in the palette; expected one of {', '.join(PALETTE)}")
    return f"var(--fi-{name})"


def custom_properties(selector: str) -> str:
    """CSS defining ``--fi-<name>`` (and ``--fi-mono``) on ``selector`` (a selector list is
    fine): light, and dark where the system prefers it (unless the element says
    ``data-theme=light``); JupyterLab's theme wins over both."""
    light = ";".join(f"--fi-{name}:var({v},{lo})" for name, (v, lo, _) in PALETTE.items())
    dark = ";".join(f"--fi-{name}:var({v},{hi})" for name, (v, _, hi) in PALETTE.items())
    unless_light = ",".join(f"{s.strip()}:not([data-theme=light])" for s in selector.split(","))
    return (f"{selector}{{{light};--fi-mono:{MONO}}}\n"
            f"@media (prefers-color-scheme:dark){{{unless_light}{{{dark}}}}}\n")

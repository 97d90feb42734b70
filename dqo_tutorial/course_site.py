r"""The course as a folder of HTML pages that reads offline (``make course``).

:func:`build` executes (or not) every numbered notebook of ``notebooks/`` and writes, in the
output folder::

    index.html                  the chapters in order: number, title (the notebook's first
                                heading), link, build time; failed chapters marked, not linked
    00_overview.html …          one page per notebook, figures embedded, previous/next links
    mathjax/                    a copy of MathJax 2.7 (Apache-2.0, its LICENSE beside it) from
                                the ``jupyter-server-mathjax`` wheel or Debian's ``libjs-mathjax``
    build.json                  what was built, how (full size / smoke / not executed), how long

Every page loads MathJax by a *relative* path (``mathjax/MathJax.js``), so the folder can be
zipped, copied and opened from disk (``file://``) on a machine without internet: no page refers
to an ``http(s)`` URL for a script or a style. nbconvert's own HTML loads MathJax, require.js and
mermaid from CDNs; the template here drops require.js and mermaid (no page needs them) and
widget state (an ipywidgets view becomes a note: there is no kernel behind a page).

A notebook that fails names itself and its cell in :class:`CourseBuildError` (raised once every
notebook has been tried); its page is not written, and a page of that name from an earlier build
is removed, so a half-built chapter never looks complete. Pages are written to a temporary file
and renamed into place.

Markdown tables: GitHub-flavoured markdown (JupyterLab, nbconvert) splits a table row at every
``|``, even inside ``$…$``; :func:`table_math_pipes` finds such rows (write ``\mid`` instead).
"""

from __future__ import annotations

import html
import json
import os
import re
import shutil
import sys
import tempfile
import time
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, TextIO

from dqo_tutorial.errors import DQOError

__all__ = [
    "MATHJAX_CONFIG",
    "CourseBuildError",
    "Chapter",
    "find_mathjax",
    "chapter_title",
    "table_math_pipes",
    "build",
]

NOTEBOOK_GLOB = "[0-9][0-9]_*.ipynb"
MATHJAX_CONFIG = "TeX-AMS-MML_HTMLorMML-full,Safe"
"""The combined MathJax configuration the pages load (present in both MathJax sources)."""
_MATHJAX_DIR = "mathjax"
_DEBIAN_MATHJAX = Path("/usr/share/javascript/mathjax")
_TEMPLATE_NAME = "dqo_course.html.j2"
_TEMPLATE = r"""{%- extends 'index.html.j2' -%}
{%- block html_head_js_requirejs -%}{%- endblock html_head_js_requirejs -%}
{% block jupyter_widgets %}{% endblock jupyter_widgets %}
{%- block html_head_js_mermaidjs -%}{%- endblock html_head_js_mermaidjs -%}
{%- block html_head_js_mathjax -%}
{{ resources.dqo_mathjax }}
{%- endblock html_head_js_mathjax -%}
{%- block body_header -%}
{{ super() }}
{{ resources.dqo_nav }}
{%- endblock body_header -%}
{% block body_footer %}
{{ resources.dqo_nav }}
{{ super() }}
{% endblock body_footer %}
"""
_NAV_STYLE = (
    "display:flex;justify-content:space-between;max-width:1200px;margin:8px auto;"
    "padding:4px 12px;font-family:sans-serif;font-size:14px"
)


class CourseBuildError(DQOError, RuntimeError):
    """A notebook of the course failed to execute or export, or no local MathJax was found."""


@dataclass(frozen=True)
class Chapter:
    """One notebook of the course and what became of it."""

    notebook: str
    title: str
    page: str
    seconds: float
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None


# --------------------------------------------------------------------------------------------
# MathJax
# --------------------------------------------------------------------------------------------


def _pip_mathjax() -> Path | None:
    try:
        import jupyter_server_mathjax
    except ImportError:
        return None
    return Path(jupyter_server_mathjax.__file__).parent / "static"


def find_mathjax() -> Path:
    """The folder of a local MathJax 2 (the one holding ``MathJax.js``).

    The ``jupyter-server-mathjax`` wheel first (``pip install jupyter-server-mathjax``; ``make
    course`` installs it), then Debian's ``libjs-mathjax`` (``/usr/share/javascript/mathjax``).
    """
    config = MATHJAX_CONFIG.split(",")[0]
    tried = []
    for root in (_pip_mathjax(), _DEBIAN_MATHJAX):
        if root is None:
            continue
        if (root / "MathJax.js").is_file() and (root / "config" / f"{config}.js").is_file():
            return root
        tried.append(str(root))
    raise CourseBuildError(
        "no local MathJax for the offline pages: `pip install jupyter-server-mathjax` (what "
        "`make course` does) or `apt-get install libjs-mathjax`"
        + (f" (looked in {', '.join(tried)})" if tried else "")
    )


def _mathjax_version(root: Path) -> str:
    found = re.search(r'MathJax\.version\s*=\s*"([^"]+)"', (root / "MathJax.js").read_text())
    return found.group(1) if found else "unknown"


def _copy_mathjax(source: Path, out_dir: Path) -> Path:
    """Copy MathJax next to the pages (once: a stamp names the copy's source and version)."""
    dest = out_dir / _MATHJAX_DIR
    stamp = f"{source} {_mathjax_version(source)}"
    stamp_file = dest / ".dqo-source"
    if stamp_file.is_file() and stamp_file.read_text() == stamp:
        return dest
    if dest.exists():
        shutil.rmtree(dest)
    shutil.copytree(source, dest, symlinks=False)  # Debian's fonts are symlinks: copy the files
    stamp_file.write_text(stamp)
    return dest


def _mathjax_head(mathjax: Path) -> str:
    """The page's MathJax set-up: configuration, then the local script (relative URL)."""
    fonts = mathjax / "fonts" / "HTML-CSS"
    web_font = "TeX" if (fonts / "TeX").is_dir() else "STIX-Web"  # the wheel ships STIX-Web only
    config = {
        "TeX": {"equationNumbers": {"autoNumber": "AMS", "useLabelIds": True}},
        "tex2jax": {
            "inlineMath": [["$", "$"], ["\\(", "\\)"]],
            "displayMath": [["$$", "$$"], ["\\[", "\\]"]],
            "processEscapes": True,
            "processEnvironments": True,
        },
        "MMLorHTML": {"prefer": "HTML"},
        "HTML-CSS": {
            "availableFonts": [],
            "preferredFont": None,
            "webFont": web_font,
            "imageFont": None,
            "linebreaks": {"automatic": True},
        },
        "displayAlign": "center",
        "messageStyle": "none",
    }
    return (
        '<script type="text/x-mathjax-config">\n'
        f"MathJax.Hub.Config({json.dumps(config)});\n</script>\n"
        f'<script src="{_MATHJAX_DIR}/MathJax.js?config={MATHJAX_CONFIG}"></script>'
    )


# --------------------------------------------------------------------------------------------
# reading notebooks
# --------------------------------------------------------------------------------------------


def chapter_title(nb: Any, fallback: str = "") -> str:
    """The text of the notebook's first markdown heading (``# 02 · …`` → ``02 · …``)."""
    for cell in nb.cells:
        if cell.cell_type != "markdown":
            continue
        for line in cell.source.splitlines():
            heading = re.match(r"\s{0,3}#{1,6}\s+(.*?)\s*#*\s*$", line)
            if heading and heading.group(1):
                return heading.group(1)
    return fallback


_DELIMITER_ROW = re.compile(r"^\s*\|?\s*:?-+:?\s*(\|\s*:?-+:?\s*)*\|?\s*$")
_CODE_SPAN = re.compile(r"(`+).*?\1")
_MATH_SPAN = re.compile(r"(?<!\\)(\$\$?)(.+?)(?<!\\)\1")


def _table_rows(source: str) -> Iterable[tuple[int, str]]:
    """(line number from 1, line) of every row of every markdown table in ``source``."""
    lines = source.splitlines()
    i = 0
    while i < len(lines):
        if i + 1 < len(lines) and "|" in lines[i] and _DELIMITER_ROW.match(lines[i + 1]):
            yield i + 1, lines[i]
            i += 2
            while i < len(lines) and "|" in lines[i] and lines[i].strip():
                yield i + 1, lines[i]
                i += 1
        else:
            i += 1


def table_math_pipes(nb: Any) -> list[tuple[int, int, str]]:
    r"""Table rows with a ``|`` inside ``$…$``: ``(cell index, line number, row)`` for each.

    Markdown splits a table row at every ``|`` before it sees the math, so
    ``$\pi_\theta(a_h|s_h)$`` in a table breaks the row's columns (``\|`` as well: the escape is
    eaten). Write ``\mid`` (``\Vert`` for a norm).
    """
    found = []
    for index, cell in enumerate(nb.cells):
        if cell.cell_type != "markdown":
            continue
        for number, row in _table_rows(cell.source):
            text = _CODE_SPAN.sub("", row)
            if any("|" in m.group(2) for m in _MATH_SPAN.finditer(text)):
                found.append((index, number, row))
    return found


# --------------------------------------------------------------------------------------------
# executing and exporting one notebook
# --------------------------------------------------------------------------------------------


def _client_class():
    from nbclient import NotebookClient

    class _Client(NotebookClient):
        """Remembers which cell is running, so that a failure can name it."""

        cell_index = -1

        async def async_execute_cell(self, cell, cell_index, execution_count=None,
                                     store_history=True):  # fmt: skip
            self.cell_index = cell_index
            return await super().async_execute_cell(
                cell, cell_index, execution_count, store_history
            )

    return _Client


def _execute(nb: Any, path: Path, *, smoke: bool, timeout: int) -> None:
    """Run ``nb`` in place in a fresh kernel started in the notebook's folder."""
    from nbclient.exceptions import CellExecutionError, CellTimeoutError, DeadKernelError

    client = _client_class()(
        nb,
        timeout=timeout,
        kernel_name=nb.metadata.get("kernelspec", {}).get("name", "python3"),
        resources={"metadata": {"path": str(path.parent)}},
        store_widget_state=False,
    )
    env = {**os.environ, "DQO_SMOKE": "1" if smoke else "0"}
    # the kernel's own stderr (ipykernel's start-up warnings) is kept out of the progress lines
    # and shown only if the kernel dies
    with tempfile.TemporaryFile("w+") as stderr:
        try:
            client.execute(env=env, stderr=stderr)
        except (CellExecutionError, CellTimeoutError, DeadKernelError) as err:
            stderr.seek(0)
            raise CourseBuildError(_failure(nb, path, client.cell_index, err, timeout,
                                            stderr.read()[-2000:])) from err  # fmt: skip


def _failure(nb: Any, path: Path, index: int, err: Exception, timeout: int, log: str) -> str:
    """One line naming the notebook, the cell (index from 0, first line) and what went wrong."""
    from nbclient.exceptions import CellExecutionError, CellTimeoutError

    source = nb.cells[index].source.strip() if 0 <= index < len(nb.cells) else ""
    first = source.splitlines()[0] if source else ""
    if isinstance(err, CellExecutionError):
        what = f"raised {err.ename}: {err.evalue}"
    elif isinstance(err, CellTimeoutError):
        what = f"ran past the {timeout} s timeout"
    else:
        what = "killed the kernel" + (f"; its stderr ends:\n{log}" if log.strip() else "")
    return f"{path.name}: cell {index} (counting from 0; it begins {first!r}) {what}"


_WIDGET_NOTE = (
    "An interactive widget (ipywidgets) stands here when the notebook runs in Jupyter; "
    "a static page has no kernel behind it: open the notebook to use it."
)


def _static(nb: Any) -> None:
    """A page has no kernel: each widget view becomes a note saying so; widget state goes."""
    nb.metadata.pop("widgets", None)
    for cell in nb.cells:
        for output in cell.get("outputs", []):
            data = output.get("data")
            if data and "application/vnd.jupyter.widget-view+json" in data:
                output["data"] = {
                    "text/html": f'<p class="dqo-widget-note"><em>{_WIDGET_NOTE}</em></p>',
                    "text/plain": _WIDGET_NOTE,
                }


def _nav(chapters: list[tuple[str, str]], k: int) -> str:
    """Previous / index / next links of chapter ``k`` (``chapters``: (page, title) pairs)."""

    def link(i: int, arrow: str) -> str:
        if not 0 <= i < len(chapters):
            return "<span></span>"
        page, title = chapters[i]
        label = f"{arrow} {html.escape(title)}" if arrow == "←" else f"{html.escape(title)} {arrow}"
        return f'<a href="{html.escape(page)}">{label}</a>'

    return (
        f'<nav class="dqo-course-nav" style="{_NAV_STYLE}">{link(k - 1, "←")}'
        f'<a href="index.html">contents</a>{link(k + 1, "→")}</nav>'
    )


def _exporter():
    from jinja2 import DictLoader
    from nbconvert import HTMLExporter

    return HTMLExporter(
        template_name="lab",
        template_file=_TEMPLATE_NAME,
        extra_loaders=[DictLoader({_TEMPLATE_NAME: _TEMPLATE})],
        embed_images=True,
    )


def _write_atomically(path: Path, text: str) -> None:
    partial = path.with_name(f".{path.name}.partial")
    partial.write_text(text, encoding="utf-8")
    os.replace(partial, path)


# --------------------------------------------------------------------------------------------
# the whole course
# --------------------------------------------------------------------------------------------


def _index_page(chapters: list[Chapter], mode: str, mathjax_head: str, total: float) -> str:
    rows = []
    for c in chapters:
        title = html.escape(c.title)
        if c.ok:
            entry = f'<a href="{html.escape(c.page)}">{title}</a>'
            note = f"{c.seconds:.0f} s" if mode != "not executed" else ""
        else:
            entry = f"{title} <strong>(not built)</strong>"
            note = html.escape(c.error or "")
        rows.append(f'<li>{entry} <span class="note">{note}</span></li>')
    items = "\n".join(rows)
    return f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1.0">
<title>DQO tutorial: the course</title>
<style>
body {{ font-family: sans-serif; max-width: 860px; margin: 2em auto; padding: 0 1em;
       line-height: 1.5; }}
ul.chapters {{ list-style: none; padding-left: 0; }}
li {{ margin: 0.4em 0; }}
.note {{ color: #777; font-size: 0.85em; margin-left: 0.5em; }}
</style>
{mathjax_head}
</head>
<body>
<h1>Direct Q-function Optimization (DQO): the course</h1>
<p>The notebooks of <code>notebooks/</code>, executed ({html.escape(mode)}) and rendered to HTML
with their figures. The pages read offline: MathJax is in <code>mathjax/</code> beside them.</p>
<ul class="chapters">
{items}
</ul>
<p class="note">Built in {total:.0f} s by <code>dqo_tutorial.course_site.build</code>.</p>
</body>
</html>
"""


def _build_one(nb: Any, path: Path, exporter: Any, *, execute: bool, smoke: bool, timeout: int,
               resources: dict[str, str]) -> str:  # fmt: skip
    """Execute and export one notebook; returns the page's HTML (raises CourseBuildError)."""
    if execute:
        _execute(nb, path, smoke=smoke, timeout=timeout)
    _static(nb)
    try:
        body, _ = exporter.from_notebook_node(
            nb,
            resources={
                "metadata": {"name": resources["title"], "path": str(path.parent)},
                **resources,
            },  # fmt: skip
        )
    except Exception as err:  # nbconvert's errors have no common base class
        raise CourseBuildError(f"{path.name}: export to HTML failed: {err}") from err
    return body


def build(
    notebooks_dir: str | os.PathLike,
    out_dir: str | os.PathLike,
    *,
    execute: bool = True,
    smoke: bool = False,
    timeout: int = 900,
    pattern: str = NOTEBOOK_GLOB,
    stream: TextIO | None = None,
) -> list[Chapter]:
    """Write the HTML pages, ``index.html``, ``build.json`` and ``mathjax/`` into ``out_dir``.

    ``execute``: run each notebook first (a fresh kernel in the notebook's folder, with
    ``DQO_SMOKE`` set to ``smoke``); ``timeout``: seconds per cell. One progress line per
    notebook goes to ``stream`` (stdout). Every notebook is tried; if any failed, raises
    :class:`CourseBuildError` naming each (notebook, cell) after writing the index.
    """
    stream = sys.stdout if stream is None else stream
    notebooks_dir, out_dir = Path(notebooks_dir), Path(out_dir)
    paths = sorted(notebooks_dir.glob(pattern))
    if not paths:
        raise CourseBuildError(f"no notebook matching {pattern!r} in {notebooks_dir}")
    out_dir.mkdir(parents=True, exist_ok=True)
    mathjax = _copy_mathjax(find_mathjax(), out_dir)
    head = _mathjax_head(mathjax)
    mode = ("smoke mode" if smoke else "full size") if execute else "not executed"

    import nbformat

    nbs = [nbformat.read(p, as_version=4) for p in paths]
    titles = [chapter_title(nb, p.stem) for nb, p in zip(nbs, paths)]
    pages = [(f"{p.stem}.html", t) for p, t in zip(paths, titles)]
    chapters: list[Chapter] = []
    start = time.perf_counter()
    exporter = _exporter()
    for k, path in enumerate(paths):
        page = out_dir / pages[k][0]
        print(f"[{k + 1}/{len(paths)}] {path.name} ({mode}) … ", end="", file=stream, flush=True)
        t0 = time.perf_counter()
        resources = {"title": titles[k], "dqo_mathjax": head, "dqo_nav": _nav(pages, k)}
        error = None
        broken_tables = sorted({cell for cell, _, _ in table_math_pipes(nbs[k])})
        try:
            _write_atomically(
                page,
                _build_one(
                    nbs[k],
                    path,
                    exporter,
                    execute=execute,
                    smoke=smoke,
                    timeout=timeout,
                    resources=resources,
                ),  # fmt: skip
            )
        except CourseBuildError as err:
            error = str(err)
            page.unlink(missing_ok=True)  # no stale page from an earlier build looks complete
        seconds = time.perf_counter() - t0
        warn = (f" (warning: cell {', '.join(map(str, broken_tables))}: a table row with `|` inside"
                " $…$ breaks its columns; write \\mid)" if broken_tables else "")  # fmt: skip
        done = f"{seconds:.1f} s{warn}" if error is None else f"FAILED: {error}"
        print(done, file=stream, flush=True)
        chapters.append(Chapter(path.name, titles[k], page.name, round(seconds, 1), error))
    total = time.perf_counter() - start
    _write_atomically(out_dir / "index.html", _index_page(chapters, mode, head, total))
    manifest = {
        "mode": mode,
        "seconds": round(total, 1),
        "mathjax": _mathjax_version(mathjax),
        "chapters": [asdict(c) for c in chapters],
    }
    _write_atomically(out_dir / "build.json", json.dumps(manifest, indent=2) + "\n")
    failed = [c for c in chapters if not c.ok]
    if failed:
        raise CourseBuildError(
            f"{len(failed)} of {len(chapters)} notebooks failed: "
            + "; ".join(c.error or c.notebook for c in failed)
        )
    return chapters

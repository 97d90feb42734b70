r"""The rendered course (``make course``, :mod:`dqo_tutorial.course_site`) reads offline.

Offline checks on built folders: no page loads a script, a style or an image from an ``http(s)``
URL; MathJax is copied beside the pages and loaded by a relative path; the index links every
chapter in order under its first heading; figures are embedded; a failing notebook is named with
its cell and leaves no page behind. A static check flags every notebook table row with a ``|``
inside ``$…$`` (markdown splits the row there: write ``\mid``).

In a real browser (Debian's headless chromium through selenium, as ``tests/test_browser.py``;
skipped without chromium): a page opened from ``file://`` has its equations typeset by the local
MathJax with its web fonts, and a markdown table whose math uses ``\mid`` renders as a table with
the right number of columns (a synthetic notebook written here, so that the check does not
depend on the course's notebooks).
"""

from __future__ import annotations

import ast
import base64
import io
import json
import re
from html.parser import HTMLParser
from pathlib import Path

import nbformat
import pytest
from _chromium import CHROMIUM, MISSING, headless_chrome

from dqo_tutorial import course_site
from dqo_tutorial.course_site import CourseBuildError, build, chapter_title, table_math_pipes

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = ROOT / "notebooks"
FAST = "02_soft_optimal_q.ipynb"  # a fast notebook with display maths and figures
needs_chromium = pytest.mark.skipif(CHROMIUM is None, reason=MISSING)

GOOD_TABLE = r"""| quantity | formula | meaning |
|---|---|---|
| policy | $\pi_\theta(a_h \mid s_h)$ | how likely the token is |
| log-ratio | $\beta\log\frac{\pi_\theta}{\pi_{\rm ref}}(a_h \mid s_h) = Q - V$ | advantage |
"""
BAD_TABLE = GOOD_TABLE.replace(r"\mid", "|")
PNG_1X1 = (
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8BQDwAEhQGAhKmMIQ"
    "AAAABJRU5ErkJggg=="
)


def _notebook(*cells) -> nbformat.NotebookNode:
    nb = nbformat.v4.new_notebook()
    for kind, source in cells:
        new = nbformat.v4.new_markdown_cell if kind == "md" else nbformat.v4.new_code_cell
        nb.cells.append(new(source))
    return nb


def _write(folder: Path, name: str, nb: nbformat.NotebookNode) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    nbformat.write(nb, folder / name)
    return folder / name


class _Refs(HTMLParser):
    """Every URL a page loads (scripts, styles, images, frames) and every link it shows."""

    def __init__(self):
        super().__init__()
        self.loads: list[str] = []
        self.links: list[str] = []

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag in ("script", "img", "iframe", "embed", "source", "audio", "video"):
            self.loads.append(attrs.get("src") or "")
        elif tag == "link":
            self.loads.append(attrs.get("href") or "")
        elif tag == "a":
            self.links.append(attrs.get("href") or "")


def _refs(page: Path) -> _Refs:
    parser = _Refs()
    parser.feed(page.read_text(encoding="utf-8"))
    return parser


def _remote_loads(page: Path) -> list[str]:
    text = page.read_text(encoding="utf-8")
    remote = [u for u in _refs(page).loads if re.match(r"\s*(https?:)?//", u)]
    # CSS and JS loads that are not tags: url(…), @import, import("…")
    remote += re.findall(r"url\(\s*['\"]?\s*(?:https?:)?//[^)]*\)", text)
    remote += re.findall(r"@import\s+['\"]?(?:url\()?\s*['\"]?(?:https?:)?//[^;]*", text)
    remote += re.findall(r"import\(\s*['\"](?:https?:)?//[^)]*\)", text)
    return remote


# --------------------------------------------------------------------------------------------
# built folders (module-scoped: each is built once)
# --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def whole_course(tmp_path_factory):
    """Every notebook of the course, rendered as stored (no execution: cheap)."""
    out = tmp_path_factory.mktemp("course-unexecuted")
    log = io.StringIO()
    chapters = build(NOTEBOOKS, out, execute=False, stream=log)
    return out, chapters, log.getvalue()


@pytest.fixture(scope="module")
def executed(tmp_path_factory):
    """The fast notebook executed in smoke mode, in its own folder (as make course does)."""
    out = tmp_path_factory.mktemp("course-smoke")
    log = io.StringIO()
    chapters = build(NOTEBOOKS, out, smoke=True, pattern=FAST, timeout=600, stream=log)
    return out, chapters, log.getvalue()


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory):
    """A two-chapter course written here: display maths, and the same table with ``\\mid``
    (cell 2 of chapter 00) and with ``|`` inside its maths (cell 3)."""
    src = tmp_path_factory.mktemp("synthetic-notebooks")
    _write(src, "00_tables.ipynb", _notebook(
        ("md", "# 00 · Tables with maths\n\nInline $x_h$ and display:\n\n"
               "$$\\begin{aligned}\nQ(s,a) &= r + V(s') \\\\\nV(s) &= \\beta\\log Z\n"
               "\\end{aligned}$$"),
        ("md", "Some text."),
        ("md", "The good table:\n\n" + GOOD_TABLE),
        ("md", "The broken table:\n\n" + BAD_TABLE),
        ("md", "A diagram beside the notebook: ![a diagram](diagram.png)"),
    ))  # fmt: skip
    (src / "diagram.png").write_bytes(base64.b64decode(PNG_1X1))
    second = _notebook(("md", "# 01 · A second chapter\n\n$a+b$"), ("code", "explore(grid)"))
    second.cells[1].outputs = [nbformat.v4.new_output("display_data", data={
        "application/vnd.jupyter.widget-view+json": {"model_id": "abc", "version_major": 2,
                                                     "version_minor": 0},
        "text/plain": "VBox(children=(Dropdown(...),))",
    })]  # fmt: skip
    second.metadata["widgets"] = {"application/vnd.jupyter.widget-state+json": {"state": {}}}
    _write(src, "01_second.ipynb", second)
    out = tmp_path_factory.mktemp("synthetic-site")
    build(src, out, execute=False, stream=io.StringIO())
    return out


# --------------------------------------------------------------------------------------------
# offline: what the pages load, the index
# --------------------------------------------------------------------------------------------


def test_no_page_loads_anything_from_the_internet(whole_course, executed):
    pages = [p for out, _, _ in (whole_course, executed) for p in sorted(out.glob("*.html"))]
    assert len(pages) == len(list(NOTEBOOKS.glob("[0-9][0-9]_*.ipynb"))) + 1 + 2
    offenders = {p.name: _remote_loads(p) for p in pages if _remote_loads(p)}
    assert not offenders, offenders


def test_the_remote_check_can_fail(tmp_path):
    page = tmp_path / "p.html"
    bad_heads = (
        '<script src="https://cdnjs.cloudflare.com/x.js"></script>',
        '<link rel="stylesheet" href="//fonts.example/x.css">',
        "<style>@import url(https://fonts.example/x.css);</style>",
        '<script type="module">await import("https://x.example/m.mjs")</script>',
    )
    for bad in bad_heads:
        page.write_text(f"<html><head>{bad}</head><body><a href='https://ok.example'>a</a></body>")
        assert _remote_loads(page), bad
    page.write_text("<html><body><a href='https://ok.example'>a reference is fine</a></body>")
    assert not _remote_loads(page)


def test_pages_load_the_copied_mathjax_by_a_relative_path(whole_course):
    out, chapters, _ = whole_course
    assert (out / "mathjax" / "MathJax.js").is_file()
    config = course_site.MATHJAX_CONFIG.split(",")[0]
    assert (out / "mathjax" / "config" / f"{config}.js").is_file()
    for c in chapters:
        scripts = [u for u in _refs(out / c.page).loads if "MathJax.js" in u]
        assert scripts == [f"mathjax/MathJax.js?config={course_site.MATHJAX_CONFIG}"], c.page


def test_the_index_links_every_chapter_in_order_under_its_title(whole_course):
    out, chapters, log = whole_course
    notebooks = sorted(NOTEBOOKS.glob("[0-9][0-9]_*.ipynb"))
    assert [c.notebook for c in chapters] == [p.name for p in notebooks]
    links = [u for u in _refs(out / "index.html").links if u.endswith(".html")]
    assert links == [f"{p.stem}.html" for p in notebooks]
    assert all((out / u).is_file() for u in links)
    index = (out / "index.html").read_text(encoding="utf-8")
    for p, c in zip(notebooks, chapters):
        title = chapter_title(nbformat.read(p, as_version=4))
        assert title and c.title == title
        assert f">{_html(title)}</a>" in index, title
    # one progress line per notebook, nothing else
    assert len(log.splitlines()) == len(notebooks), log
    manifest = json.loads((out / "build.json").read_text())
    assert manifest["mode"] == "not executed" and len(manifest["chapters"]) == len(notebooks)


def _html(text: str) -> str:
    import html

    return html.escape(text)


def test_pages_link_to_their_neighbours_and_the_index(synthetic):
    first, second = _refs(synthetic / "00_tables.html"), _refs(synthetic / "01_second.html")
    assert "01_second.html" in first.links and "index.html" in first.links
    assert "00_tables.html" in second.links and "index.html" in second.links


def test_a_markdown_image_is_embedded_in_the_page(synthetic):
    page = synthetic / "00_tables.html"
    images = [u for u in _refs(page).loads if u and not u.startswith("mathjax/")]
    assert images and all(u.startswith("data:image/png;base64,") for u in images), images


def test_a_widget_becomes_a_note_on_the_static_page(synthetic):
    page = (synthetic / "01_second.html").read_text(encoding="utf-8")
    assert course_site._WIDGET_NOTE in page
    assert "VBox(children" not in page and "widget-state+json" not in page
    assert "widget-view+json" not in page


def test_an_executed_page_embeds_its_figures(executed):
    out, chapters, log = executed
    (chapter,) = chapters
    assert chapter.ok and chapter.notebook == FAST
    page = (out / chapter.page).read_text(encoding="utf-8")
    assert "data:image/png;base64," in page  # figures inside the page, not beside it
    assert "Traceback" not in page and "NotImplementedError" not in page
    assert len(log.splitlines()) == 1 and "smoke mode" in log, log  # no kernel chatter
    assert json.loads((out / "build.json").read_text())["mode"] == "smoke mode"


def test_a_failing_notebook_names_its_cell_and_leaves_no_page(tmp_path):
    src = tmp_path / "nb"
    _write(src, "00_fine.ipynb", _notebook(("md", "# 00 · Fine"), ("code", "x = 1")))
    _write(src, "01_broken.ipynb", _notebook(
        ("md", "# 01 · Broken"), ("code", "y = 2"), ("code", "raise ValueError('boom')"),
        ("code", "z = 3"),
    ))  # fmt: skip
    out = tmp_path / "site"
    out.mkdir()
    (out / "01_broken.html").write_text("<html>an old, complete-looking page</html>")
    log = io.StringIO()
    with pytest.raises(CourseBuildError) as err:
        build(src, out, stream=log)
    message = str(err.value)
    assert "01_broken.ipynb: cell 2" in message and "ValueError: boom" in message, message
    assert "raise ValueError" in message  # the cell's first line
    assert (out / "00_fine.html").is_file()
    assert not (out / "01_broken.html").exists()
    assert not list(out.glob(".*.partial"))
    index = (out / "index.html").read_text(encoding="utf-8")
    assert 'href="00_fine.html"' in index and 'href="01_broken.html"' not in index
    assert "not built" in index
    assert "FAILED: 01_broken.ipynb: cell 2" in log.getvalue()


def test_without_a_local_mathjax_the_build_says_how_to_get_one(tmp_path, monkeypatch):
    monkeypatch.setattr(course_site, "_pip_mathjax", lambda: None)
    monkeypatch.setattr(course_site, "_DEBIAN_MATHJAX", tmp_path / "nothing-here")
    src = _write(tmp_path / "nb", "00_x.ipynb", _notebook(("md", "# 00 · X"))).parent
    with pytest.raises(CourseBuildError, match="pip install jupyter-server-mathjax"):
        build(src, tmp_path / "site", execute=False, stream=io.StringIO())


def test_the_cli_builds_the_course(tmp_path, capsys):
    from dqo_tutorial.cli import main

    src = _write(tmp_path / "nb", "00_x.ipynb", _notebook(("md", "# 00 · X\n\n$y$"))).parent
    assert main(["course", "--notebooks", str(src), "--out", str(tmp_path / "s"),
                 "--no-execute"]) == 0  # fmt: skip
    assert (tmp_path / "s" / "00_x.html").is_file() and (tmp_path / "s" / "index.html").is_file()
    assert main(["course", "--notebooks", str(tmp_path / "none"), "--out", str(tmp_path)]) == 2
    assert "no notebook matching" in capsys.readouterr().err


def test_the_site_builder_does_not_import_training_code():
    """course_site is the course layer: nbconvert, nbformat, dqo_tutorial.course, errors."""
    tree = ast.parse((ROOT / "dqo_tutorial" / "course_site.py").read_text())
    imported = {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    imported |= {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module}
    ours = {m for m in imported if m.startswith("dqo_tutorial")}
    assert ours <= {"dqo_tutorial.course", "dqo_tutorial.errors"}, ours
    assert not {m for m in imported if m.split(".")[0] in ("torch", "transformers")}


# --------------------------------------------------------------------------------------------
# tables with maths
# --------------------------------------------------------------------------------------------


def test_table_math_pipes_finds_a_pipe_inside_table_maths():
    nb = _notebook(
        ("md", "Outside a table $p(a|s)$ is fine."),
        ("md", "intro\n\n" + GOOD_TABLE),
        ("md", BAD_TABLE),
        ("md", "| a | b |\n|:--|--:|\n| `x|y` in code | $\\|v\\|$ a norm |"),
    )
    found = table_math_pipes(nb)
    assert [(cell, line) for cell, line, _ in found] == [(2, 3), (2, 4), (3, 3)]
    assert found[0][2].startswith("| policy |")


def test_no_notebook_table_has_a_pipe_inside_maths():
    """A `|` inside `$…$` in a table row splits the row (write `\\mid`, `\\Vert` for a norm)."""
    found = [
        f"{p.name} cell {cell} line {line}: {row}"
        for p in sorted(NOTEBOOKS.glob("[0-9][0-9]_*.ipynb"))
        for cell, line, row in table_math_pipes(nbformat.read(p, as_version=4))
    ]
    assert not found, "\n".join(found)


def test_no_notebook_uses_a_diagram_renderer_that_needs_the_internet():
    """nbconvert renders ```mermaid blocks with mermaid.js from a CDN: offline they stay source
    text. Draw diagrams with matplotlib (or an SVG/PNG next to the notebook) instead."""
    found = [
        f"{p.name} cell {i}"
        for p in sorted(NOTEBOOKS.glob("[0-9][0-9]_*.ipynb"))
        for i, cell in enumerate(nbformat.read(p, as_version=4).cells)
        if cell.cell_type == "markdown" and re.search(r"^\s*(```|~~~)\s*mermaid", cell.source, re.M)
    ]
    assert not found, found


def test_the_static_html_keeps_a_mid_table_and_breaks_a_pipe_table(synthetic):
    """Without a browser: nbconvert's markdown gives the `\\mid` table three columns in every
    row and does not give the `|` table that (so the browser check below can fail)."""
    page = (synthetic / "00_tables.html").read_text(encoding="utf-8")
    tables = [t for t in re.findall(r"<table.*?</table>", page, re.S) if "how likely" in t]
    shapes = [[len(re.findall(r"<t[hd][ >]", r)) for r in re.findall(r"<tr.*?</tr>", t, re.S)]
              for t in tables]  # fmt: skip
    assert shapes.count([3, 3, 3]) == 1, shapes  # the \mid table; the | one is broken
    (good,) = [t for t, s in zip(tables, shapes) if s == [3, 3, 3]]
    assert "\\mid" in good


# --------------------------------------------------------------------------------------------
# in a real browser
# --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def browser():
    with headless_chrome("1300,1000", script_timeout=90) as driver:
        yield driver


_WAIT_FOR_MATHJAX = """
const done = arguments[arguments.length - 1];
(function wait() {
  if (window.MathJax && MathJax.isReady) MathJax.Hub.Queue(() => done(true));
  else setTimeout(wait, 50);
})();
"""
_TYPESET = """
const html = MathJax.OutputJax['HTML-CSS'];
return {
  font: html ? html.fontInUse : null,
  display: document.querySelectorAll('div.MathJax_Display').length,
  inline: document.querySelectorAll('span.MathJax').length,
  errors: document.querySelectorAll('.MathJax .merror, .MathJax_Error').length,
  text: Array.from(document.querySelectorAll('.jp-MarkdownCell')).map(c => c.innerText)
          .join('\\n'),
};
"""


def _open_typeset(driver, page: Path) -> dict:
    driver.get(page.resolve().as_uri())
    assert driver.execute_async_script(_WAIT_FOR_MATHJAX) is True
    return driver.execute_script(_TYPESET)


@pytest.mark.slow
@needs_chromium
def test_a_course_page_is_typeset_offline_in_chromium(browser, executed, tmp_path):
    out, (chapter,), _ = executed
    state = _open_typeset(browser, out / chapter.page)
    assert state["display"] > 0 and state["inline"] > 0, state
    assert state["errors"] == 0, state
    assert state["font"] in ("STIX-Web", "TeX"), state  # the copied web fonts loaded
    assert "\\begin{aligned}" not in state["text"] and "$$" not in state["text"], state
    browser.save_screenshot(str(tmp_path / "course-page.png"))


@pytest.mark.slow
@needs_chromium
def test_a_table_with_mid_renders_with_its_columns_in_chromium(browser, synthetic):
    state = _open_typeset(browser, synthetic / "00_tables.html")
    assert state["errors"] == 0 and state["display"] == 1, state
    assert "\\begin{aligned}" not in state["text"], state["text"][:500]
    shape = browser.execute_script("""
      return Array.from(document.querySelectorAll('table')).map(t => ({
        text: t.innerText,
        columns: Array.from(t.rows).map(r => r.cells.length),
        maths: t.querySelectorAll('span.MathJax').length,
      }));""")  # fmt: skip
    good = [t for t in shape if "how likely" in t["text"]]
    assert good and good[0]["columns"] == [3, 3, 3], shape
    assert good[0]["maths"] == 2, good  # both formulas typeset inside their cells
    broken = [t for t in shape if t is not good[0] and "how likely" in t["text"]]
    assert all(t["columns"] != [3, 3, 3] for t in broken), broken  # `|` does break a table

"""The built book: every chapter rendered, maths and figures present, no raw markup.

The book is built once with ``jupyter-book build -W`` into a temporary folder (the
notebooks are not executed: their stored outputs are rendered, and nbval checks those).
The static checks read the HTML. The browser checks open every page in headless
Chromium over loopback, as a reader would, and need Playwright and a Chromium binary
(Debian's ``chromium``, found on PATH or named by ``RDT_CHROMIUM``); CI installs both.
"""

from __future__ import annotations

import functools
import http.server
import os
import re
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import pytest
import yaml
from bs4 import BeautifulSoup

ROOT = Path(__file__).resolve().parents[1]
CONFIG = yaml.safe_load((ROOT / "_config.yml").read_text())
VIEWPORT = {"width": 1280, "height": 900}  # a laptop screen: the text column is about 750 px wide

# MyST or LaTeX that should never reach a reader as text.
RAW_MARKUP = re.compile(r"```|:::|\{(cite|eq|numref|ref|doc|math|figure|admonition|note)\}|\$|\\\(|\\\[|\\begin\{|\]\(")


def toc_pages() -> list[str]:
    """Every page of ``_toc.yml``, as source paths without suffix (``book/01_data_and_metrics``)."""
    toc = yaml.safe_load((ROOT / "_toc.yml").read_text())
    pages = [toc["root"]]
    for part in toc.get("parts", []):
        pages += [chapter["file"] for chapter in part["chapters"]]
    return [str(Path(page).with_suffix("")) for page in pages]


@pytest.fixture(scope="module")
def html(tmp_path_factory) -> Path:
    """The book built with warnings as errors; returns the ``_build/html`` folder."""
    out = tmp_path_factory.mktemp("book")
    jupyter_book = Path(sys.executable).with_name("jupyter-book")
    command = [str(jupyter_book) if jupyter_book.exists() else "jupyter-book", "build", str(ROOT),
               "--path-output", str(out), "-W", "-q"]
    done = subprocess.run(command, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, f"jupyter-book build failed:\n{done.stdout[-4000:]}\n{done.stderr[-4000:]}"
    return out / "_build" / "html"


def soup(html: Path, page: str) -> BeautifulSoup:
    return BeautifulSoup((html / f"{page}.html").read_text(encoding="utf-8"), "html.parser")


def test_every_page_of_the_toc_is_built(html):
    missing = [page for page in toc_pages() if not (html / f"{page}.html").is_file()]
    assert not missing, f"pages of _toc.yml without HTML: {missing}"


@pytest.mark.parametrize("page", toc_pages())
def test_page_has_no_raw_markup_and_resolves_its_files(html, page):
    doc = soup(html, page)
    title = doc.title.get_text()
    assert not re.search(r"[\\$]", title), f"{page}: TeX in the page title {title!r} (shown raw in the browser tab)"
    nav_math = doc.select(".bd-sidebar-primary .math")
    assert not nav_math, f"{page}: maths in the chapter list {nav_math[0]} (raw TeX on pages without formulas)"

    article = doc.select_one("article.bd-article")
    assert article is not None, f"{page}: no article"
    math = article.select(".math")
    if math:
        scripts = [s["src"].split("?")[0] for s in doc.find_all("script", src=True) if "mathjax" in s["src"].lower()]
        assert scripts, f"{page}: {len(math)} formulas but no MathJax script"
        for src in scripts:
            assert not src.startswith(("http:", "https:", "//")), f"{page}: MathJax from the network ({src})"
            assert (html / page).parent.joinpath(src).resolve().is_file(), f"{page}: MathJax script {src} missing"

    for tag in article.select("pre, code, .math, script, style, .cell_output, .highlight"):
        tag.decompose()
    for line in article.get_text("\n").splitlines():
        found = RAW_MARKUP.search(line)
        assert not found, f"{page}: raw markup {found.group(0)!r} in the text: {line.strip()[:120]!r}"

    for img in doc.select("article img"):
        path = (html / page).parent.joinpath(img["src"]).resolve()
        assert path.is_file() and path.stat().st_size > 0, f"{page}: image {img['src']} missing or empty"


@pytest.mark.parametrize("page", [p for p in toc_pages() if (ROOT / f"{p}.ipynb").is_file()])
def test_colab_button_opens_the_notebook_on_main(html, page):
    repo = CONFIG["repository"]["url"].removeprefix("https://github.com/")
    expected = f"{CONFIG['launch_buttons']['colab_url']}/github/{repo}/blob/{CONFIG['repository']['branch']}/{page}.ipynb"
    links = [a["href"] for a in soup(html, page).find_all("a", href=True) if "colab.research.google.com" in a["href"]]
    assert links == [expected], f"{page}: Colab links {links}"


def chromium() -> str | None:
    """A Chromium binary: ``RDT_CHROMIUM``, or the first of the usual names on PATH."""
    if os.environ.get("RDT_CHROMIUM"):
        return os.environ["RDT_CHROMIUM"]
    return next(filter(None, map(shutil.which, ("chromium", "chromium-browser", "google-chrome"))), None)


@pytest.fixture(scope="module")
def browser():
    sync_api = pytest.importorskip("playwright.sync_api", reason="the browser checks need Playwright")
    binary = chromium()
    if binary is None:
        pytest.skip("the browser checks need Chromium: install Debian's chromium or set RDT_CHROMIUM")
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=binary,
            args=["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                  "--disable-sync", "--no-first-run"])
        yield browser
        browser.close()


@pytest.fixture(scope="module")
def served(html):
    """``html`` served on loopback; returns its base URL."""

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Quiet, directory=str(html)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_port}/"
    server.shutdown()


RENDERED = """() => {
  const article = document.querySelector('article.bd-article');
  const math = [...article.querySelectorAll('.math')];
  return {
    math: math.length,
    typeset: math.filter(m => m.querySelector('mjx-container')).length,
    errors: [...article.querySelectorAll('mjx-merror')].map(e => e.textContent).slice(0, 3),
    too_wide: math.filter(m => m.tagName === 'DIV').map(m => m.querySelector('mjx-container')).filter(Boolean)
      .filter(c => c.scrollWidth > c.clientWidth + 1)
      .map(c => ({tex: c.textContent.slice(0, 60), width: c.scrollWidth, room: c.clientWidth})),
    broken_images: [...article.querySelectorAll('img')].filter(i => !i.complete || i.naturalWidth === 0).map(i => i.src),
  };
}"""


@pytest.mark.parametrize("page", toc_pages())
def test_page_renders_in_chromium(browser, served, page):
    tab = browser.new_page(viewport=VIEWPORT)
    failed = []
    tab.on("response", lambda r: r.status >= 400 and failed.append(f"{r.status} {r.url}"))
    # the book must render offline: anything that is not loopback is refused
    tab.route("**/*", lambda route: route.continue_() if route.request.url.startswith(served) else route.abort())
    tab.goto(served + f"{page}.html", wait_until="load")
    tab.evaluate("() => window.MathJax && MathJax.startup ? MathJax.startup.promise : null")
    result = tab.evaluate(RENDERED)
    tab.close()
    assert result["typeset"] == result["math"], f"{page}: {result['math'] - result['typeset']} formulas not typeset"
    assert not result["errors"], f"{page}: MathJax errors {result['errors']}"
    assert not result["too_wide"], f"{page}: formulas wider than the text column at 1280 px: {result['too_wide']}"
    assert not result["broken_images"], f"{page}: images that did not load: {result['broken_images']}"
    assert not [f for f in failed if "favicon" not in f], f"{page}: failed requests {failed}"

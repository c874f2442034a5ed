"""The built book: every chapter rendered, maths and figures present, no raw markup.

Chapters carry the diagrams of ``book/figures/diagrams.py`` (checked against the package's
shapes), chapter 8 the algorithm box, and every ipywidgets slider a kernel-free animation
(``rdtutorial.animation.scrub``) that plays offline. The book is built once with ``jupyter-book build -W`` into a temporary folder (the
notebooks are not executed: their stored outputs are rendered, and nbval checks those).
The static checks read the HTML. The browser checks open every page in headless
Chromium over loopback, as a reader would, and need Playwright and a Chromium binary
(Debian's ``chromium``, found on PATH or named by ``RDT_CHROMIUM``); CI installs both.
"""

from __future__ import annotations

import functools
import http.server
import importlib.util
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


# where each diagram of book/figures is shown
DIAGRAMS = {
    "book/intro": ["rd_pipeline.svg", "rdpp_pipeline.svg", "rdpp_losses.svg"],
    "book/02_reverse_distillation": ["rd_pipeline.svg"],
    "book/04_projection_layers": ["rdpp_pipeline.svg"],
    "book/07_contrast": ["rdpp_losses.svg"],
    "book/08_training_rdpp": ["rdpp_pipeline.svg", "rdpp_losses.svg"],
}
WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"


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


@pytest.mark.slow
def test_every_page_of_the_toc_is_built(html):
    missing = [page for page in toc_pages() if not (html / f"{page}.html").is_file()]
    assert not missing, f"pages of _toc.yml without HTML: {missing}"


@pytest.mark.parametrize("page", toc_pages())
@pytest.mark.slow
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
@pytest.mark.slow
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
@pytest.mark.slow
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


def test_diagrams_show_the_package_shapes(monkeypatch):
    spec = importlib.util.spec_from_file_location("diagrams", ROOT / "book" / "figures" / "diagrams.py")
    diagrams = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, "diagrams", diagrams)  # dataclasses look their module up
    spec.loader.exec_module(diagrams)
    expected = diagrams.describe({name: diagrams.model_shapes(name, size) for name, size in diagrams.PROFILES})
    for name in sorted({n for names in DIAGRAMS.values() for n in names}):
        svg = (ROOT / "book" / "figures" / name).read_text()
        found = re.search(r"<dc:description>(.*?)</dc:description>", svg, re.S)
        assert found and found.group(1) == expected, (
            f"{name} shows other shapes than the package: run python book/figures/diagrams.py")


@pytest.mark.parametrize("page", sorted(DIAGRAMS))
@pytest.mark.slow
def test_diagrams_are_figures_with_alt_text_and_caption(html, page):
    figures = {}
    for img in soup(html, page).select("article figure img"):
        figures[Path(img["src"]).name] = img
    for name in DIAGRAMS[page]:
        assert name in figures, f"{page}: diagram {name} missing (figures: {sorted(figures)})"
        img = figures[name]
        assert len(img.get("alt", "")) >= 40, f"{page}: {name} needs an alt text that describes it"
        caption = img.find_parent("figure").select_one("figcaption")
        assert caption and caption.get_text(strip=True), f"{page}: {name} has no caption"


@pytest.mark.slow
def test_algorithm_box_links_every_step_to_its_cell(html):
    doc = soup(html, "book/08_training_rdpp")
    box = doc.select_one("article .admonition.algorithm")
    assert box is not None, "chapter 8: no algorithm box (an admonition with class algorithm)"
    text = box.get_text(" ")
    assert "Input" in text and "Output" in text, "the algorithm box names its inputs and outputs"
    steps = box.select("ol > li")
    assert len(steps) >= 6, f"the algorithm box has {len(steps)} numbered steps"
    ids = {tag["id"] for tag in doc.find_all(id=True)}
    for i, step in enumerate(steps, 1):
        links = [a["href"] for a in step.select("a[href^='#']")]
        assert links, f"step {i} of the algorithm links to no cell"
        assert all(link[1:] in ids for link in links), f"step {i}: links {links} to missing targets"


@pytest.mark.parametrize("page", toc_pages())
@pytest.mark.slow
def test_every_slider_has_a_kernel_free_twin(html, page):
    article = soup(html, page).select_one("article.bd-article")
    widgets = article.select(f'script[type="{WIDGET_VIEW}"]')
    animations = article.select("div.animation")
    assert len(animations) >= len(widgets), (
        f"{page}: {len(widgets)} widgets but {len(animations)} animations that play without a kernel")


FIT = """names => {
  const article = document.querySelector('article.bd-article');
  const room = article.getBoundingClientRect().width;
  const diagrams = [...article.querySelectorAll('figure img')].filter(i => names.some(n => i.src.endsWith(n)))
    .map(i => ({src: i.src.split('/').pop(), width: i.getBoundingClientRect().width, natural: i.naturalWidth}));
  const animations = [...article.querySelectorAll('div.animation')].map(a => {
    const img = a.querySelector('img');
    return {width: a.getBoundingClientRect().width, natural: img.naturalWidth, src: img.src.slice(0, 30),
            buttons: [...a.querySelectorAll('button')].filter(b => b.getBoundingClientRect().width > 8
                         && b.querySelector('svg, i') && b.querySelector('svg, i').getBoundingClientRect().width > 4)
                       .length,
            frames: +a.querySelector('input.anim-slider').max + 1};
  });
  return {room, diagrams, animations};
}"""

STEP = """async () => {
  const out = [];
  for (const a of document.querySelectorAll('article div.animation')) {
    const img = a.querySelector('img'), slider = a.querySelector('input.anim-slider');
    const seen = new Set([img.src]);
    for (let i = 0; i <= +slider.max; i++) {
      a.querySelector('button[title="Next frame"]').click();
      await new Promise(r => setTimeout(r, 30));
      if (img.complete && img.naturalWidth > 0) seen.add(img.src);
    }
    out.push({frames: +slider.max + 1, loaded: seen.size, value: +slider.value});
  }
  return out;
}"""


def offline_tab(browser, served, page):
    """A tab on ``page`` that refuses (and records) every request that is not loopback."""
    tab = browser.new_page(viewport=VIEWPORT)
    outside = []

    def route(r):
        if r.request.url.startswith(served) or r.request.url.startswith("data:"):
            return r.continue_()
        outside.append(r.request.url)
        return r.abort()

    tab.route("**/*", route)
    tab.goto(served + f"{page}.html", wait_until="load")
    return tab, outside


@pytest.mark.parametrize("page", sorted(DIAGRAMS))
@pytest.mark.slow
def test_diagrams_fit_the_column_in_chromium(browser, served, page):
    tab, _ = offline_tab(browser, served, page)
    result = tab.evaluate(FIT, DIAGRAMS[page])
    tab.close()
    assert sorted({d["src"] for d in result["diagrams"]}) == sorted(DIAGRAMS[page]), result["diagrams"]
    for d in result["diagrams"]:
        assert d["natural"] > 0, f"{page}: {d['src']} did not load"
        assert d["width"] <= result["room"] + 1, f"{page}: {d['src']} wider than the column: {d}"
        assert d["width"] >= 0.8 * d["natural"], f"{page}: {d['src']} shrunk below 80 % (text unreadable): {d}"


@pytest.mark.parametrize("page", [p for p in toc_pages() if (ROOT / f"{p}.ipynb").is_file()
                                  and "anim-slider" in (ROOT / f"{p}.ipynb").read_text()])
@pytest.mark.slow
def test_animations_play_offline_in_chromium(browser, served, html, page):
    tab, outside = offline_tab(browser, served, page)
    tab.wait_for_timeout(500)  # the theme's Font Awesome script swaps the button icons for SVG
    result = tab.evaluate(FIT, [])
    steps = tab.evaluate(STEP)
    tab.close()
    assert result["animations"], f"{page}: no animation rendered"
    # the only outside scripts are the live widgets' manager (require.js and @jupyter-widgets), refused here
    widget_manager = {tag["src"] for tag in soup(html, page).find_all("script", src=True)
                      if "require" in tag["src"] or "@jupyter-widgets" in tag["src"]}
    assert not set(outside) - widget_manager, f"{page}: requests outside the book: {outside[:3]}"
    for a, step in zip(result["animations"], steps):
        assert a["natural"] > 0 and a["src"].startswith("data:image/"), f"{page}: first frame not shown: {a}"
        assert a["width"] <= result["room"] + 1, f"{page}: animation wider than the column: {a}"
        assert a["buttons"] >= 9, f"{page}: only {a['buttons']} player buttons with a visible icon: {a}"
        assert 2 <= step["frames"] <= 12 and step["loaded"] == step["frames"], f"{page}: frames {step}"

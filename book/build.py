"""Build the book: README.md, docs/ and the seven notebooks with their committed outputs as one static
HTML site in build/book/, offline, then check it.

    python book/build.py            # what `make book` runs (inside .venv-book)

Steps: stage the sources into build/book-src (README.md, docs/*.md, CHANGELOG.md, notebooks/*.ipynb,
results/ and figures/, and any other repository file a page links to); in the staged notebooks,
point links at .md pages to the .html pages the site has; copy MathJax 2 from the jupyter-server-mathjax
package into assets/ (no CDN); run ``mkdocs build --strict`` (a link to a missing page fails it);
then read every built page and fail on an internal link or image that points at no file, and on an
image embedded in a notebook output that is empty. The notebooks are never executed.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote, urlsplit

ROOT = Path(__file__).resolve().parents[1]
BOOK = ROOT / "book"
SRC = ROOT / "build" / "book-src"
SITE = ROOT / "build" / "book"
MATHJAX_CONFIG = """MathJax.Hub.Config({
  messageStyle: "none",
  "HTML-CSS": {availableFonts: ["STIX-Web"], preferredFont: "STIX-Web", webFont: "STIX-Web", imageFont: null}
});
MathJax.Ajax.loadComplete("[MathJax]/config/local/latro.js");
"""
LINK = re.compile(r"\]\(([^)\s]+)\)")


def stage() -> None:
    if SRC.exists():
        shutil.rmtree(SRC)
    SRC.mkdir(parents=True)
    for name in ("README.md", "CHANGELOG.md"):
        shutil.copy2(ROOT / name, SRC / name)
    shutil.copytree(ROOT / "docs", SRC / "docs")
    (SRC / "notebooks").mkdir()
    for nb in sorted((ROOT / "notebooks").glob("*.ipynb")):
        stage_notebook(nb, SRC / "notebooks" / nb.name)
    shutil.copytree(ROOT / "figures", SRC / "figures", ignore=shutil.ignore_patterns("*_smoke.png", "*-smoke.png"))
    shutil.copytree(ROOT / "results", SRC / "results",
                    ignore=shutil.ignore_patterns("*_smoke*", "*-smoke*", "*.lock", "study_*"))
    for study in ROOT.glob("results/study_*"):           # the studies' reports, not their run records
        if study.is_file():
            shutil.copy2(study, SRC / "results" / study.name)
    stage_linked_files()
    assets = SRC / "assets"
    assets.mkdir()
    shutil.copy2(BOOK / "mathjax-loader.js", assets / "mathjax-loader.js")
    shutil.copy2(BOOK / "extra.css", assets / "extra.css")
    import jupyter_server_mathjax
    shutil.copytree(Path(jupyter_server_mathjax.__file__).parent / "static", assets / "mathjax")
    (assets / "mathjax" / "config" / "local").mkdir(parents=True, exist_ok=True)
    (assets / "mathjax" / "config" / "local" / "latro.js").write_text(MATHJAX_CONFIG)


def stage_notebook(src: Path, dst: Path) -> None:
    """Copy a notebook, its links to .md files pointed at the .html page the site builds from them."""
    nb = json.loads(src.read_text(encoding="utf-8"))
    for cell in nb["cells"]:
        if cell["cell_type"] == "markdown":
            text = "".join(cell["source"])
            cell["source"] = LINK.sub(lambda m: "](" + md_to_html(m.group(1)) + ")", text)
    dst.write_text(json.dumps(nb, ensure_ascii=False), encoding="utf-8")


def md_to_html(target: str) -> str:
    parts = urlsplit(target)
    if parts.scheme or parts.netloc:
        return target
    path = parts.path
    if path.endswith("README.md"):
        path = path[: -len("README.md")] + "index.html"
    elif path.endswith(".md") or path.endswith(".ipynb"):
        path = path.rsplit(".", 1)[0] + ".html"
    return path + ("#" + parts.fragment if parts.fragment else "")


def stage_linked_files() -> None:
    """Copy every repository file that a staged Markdown page links to and that is not staged yet."""
    for page in SRC.rglob("*.md"):
        for target in LINK.findall(page.read_text(encoding="utf-8")):
            parts = urlsplit(target)
            if parts.scheme or parts.netloc or not parts.path:
                continue
            staged = (page.parent / unquote(parts.path)).resolve()
            try:
                rel = staged.relative_to(SRC.resolve())
            except ValueError:
                continue
            original = ROOT / rel
            if not staged.exists() and original.is_file():
                staged.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(original, staged)


class _Refs(HTMLParser):
    def __init__(self):
        super().__init__()
        self.links, self.images = [], []

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "a" and a.get("href"):
            self.links.append(a["href"])
        elif tag == "img":
            self.images.append(a.get("src") or "")
        elif tag in ("script", "link") and (a.get("src") or a.get("href")):
            self.links.append(a.get("src") or a.get("href"))


def check_site() -> list[str]:
    """Every internal link, script, stylesheet and image of every page points at a file of the site."""
    problems, external_images = [], 0
    for page in sorted(SITE.rglob("*.html")):
        refs = _Refs()
        refs.feed(page.read_text(encoding="utf-8"))
        rel = page.relative_to(SITE)
        for kind, values in (("link", refs.links), ("image", refs.images)):
            for value in values:
                if kind == "image" and not value:
                    problems.append(f"{rel}: an image with no src")
                    continue
                if value.startswith("data:"):
                    if kind == "image" and len(value) < 100:
                        problems.append(f"{rel}: an empty embedded image")
                    continue
                parts = urlsplit(value)
                if parts.scheme or parts.netloc or value.startswith(("#", "mailto:")):
                    external_images += kind == "image"
                    continue
                base = SITE if parts.path.startswith("/") else page.parent     # 404.html links from the root
                target = (base / unquote(parts.path.lstrip("/"))).resolve()
                if not target.exists():
                    problems.append(f"{rel}: {kind} {value!r} points at no file")
    print(f"book: checked {len(list(SITE.rglob('*.html')))} pages; {external_images} external image(s) "
          f"(the Colab badges) load only online")
    return problems


def main() -> int:
    stage()
    # --strict turns every warning (a link to a missing page or file) into a failure; not --quiet,
    # which would hide the warnings from that count. Only warnings and errors are shown.
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}
    built = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--clean",
                            "--config-file", str(BOOK / "mkdocs.yml")], env=env, capture_output=True, text=True)
    shown = [line for line in (built.stdout + built.stderr).splitlines()
             if line.startswith(("WARNING", "ERROR", "Aborted", "Traceback", "Error"))]
    if built.returncode:
        print("\n".join(shown) or built.stdout + built.stderr, file=sys.stderr)
        print("book: mkdocs build failed", file=sys.stderr)
        return built.returncode
    problems = check_site()
    if problems:
        print("book: broken links or images:\n  " + "\n  ".join(problems), file=sys.stderr)
        return 1
    print(f"book: {SITE.relative_to(ROOT)}/index.html")
    return 0


if __name__ == "__main__":
    sys.exit(main())

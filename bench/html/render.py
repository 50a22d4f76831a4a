"""The template engine and the page assets shared by the run and study pages."""

from __future__ import annotations

from importlib import resources
from pathlib import Path

import jinja2

from bench.atomic_files import atomic_path

PAGE_ENCODING = "utf-8"  # every page, whatever the locale; the templates' <meta charset> says the same
ASSETS = ("page.css", "page.js")  # copied into each page's folder (bench.run.folder.PAGE_DIR)

_ENVIRONMENT = jinja2.Environment(
    loader=jinja2.PackageLoader("bench.html", "templates"),
    autoescape=jinja2.select_autoescape(["html"]),
    undefined=jinja2.StrictUndefined,  # a context key the template expects and the builder forgot is an error
    trim_blocks=True,
    lstrip_blocks=True,
)


def render(template: str, **context) -> str:
    """``templates/<template>`` rendered with ``context`` (HTML-escaped)."""
    return _ENVIRONMENT.get_template(template).render(**context)


def write_page(path: Path, template: str, **context) -> Path:
    """Render ``template`` into ``path`` atomically, as UTF-8 (what the pages' meta tag says); returns ``path``."""
    text = render(template, **context)
    with atomic_path(path) as temporary:
        temporary.write_text(text, encoding=PAGE_ENCODING)
    return path


def copy_assets(folder: Path) -> None:
    """The style sheet and script into ``folder`` (created if needed)."""
    folder.mkdir(parents=True, exist_ok=True)
    static = resources.files("bench.html") / "static"
    for name in ASSETS:
        with atomic_path(folder / name) as temporary:
            temporary.write_bytes((static / name).read_bytes())

"""Checks of a FastAPI app's /docs page (Swagger UI) for an air-gapped cluster: every file it
loads comes from the app itself, and it renders with no other host reachable."""

from __future__ import annotations

import re
from urllib.parse import urljoin, urlsplit

import httpx

DOCS = "/docs"
# the content type each kind of file the page loads must be served with
CONTENT_TYPES = {".js": "javascript", ".css": "text/css", ".png": "image/png", ".json": "json"}


def referenced_urls(html: str) -> list[str]:
    """The URLs the page loads: src and href attributes, and Swagger UI's ``url: '...'``."""
    return re.findall(r'\b(?:src|href)="([^"]+)"', html) + re.findall(r"\burl: '([^']+)'", html)


def check_docs_served_by_the_app(base_url: str) -> list[str]:
    """Assert that /docs references only same-origin URLs and that each answers 200 with its
    content type (JavaScript, CSS, the favicon, the JSON schema); returns them."""
    r = httpx.get(base_url + DOCS, timeout=10)
    assert r.status_code == 200, r.status_code
    assert r.headers["content-type"].startswith("text/html")
    urls = [urljoin(base_url + DOCS, u) for u in referenced_urls(r.text)]
    suffixes = {"." + u.rsplit(".", 1)[-1] for u in urls}
    assert {".js", ".css", ".json"} <= suffixes, f"not a Swagger UI page: {r.text}"
    for url in urls:
        assert urlsplit(url)[:2] == urlsplit(base_url)[:2], f"{DOCS} loads {url}"
        asset = httpx.get(url, timeout=10)
        assert asset.status_code == 200, (url, asset.status_code)
        expected = CONTENT_TYPES["." + url.rsplit(".", 1)[-1]]
        assert expected in asset.headers["content-type"], (url, asset.headers["content-type"])
    return urls


def render_docs_offline(base_url: str, expect_text: str) -> list[str]:
    """Open /docs in headless Chromium with every other host blocked and wait until
    ``expect_text`` (an operation of the API) shows; returns the blocked requests."""
    from tests.ui.browser import browser_page

    origin = "{}://{}/".format(*urlsplit(base_url)[:2])
    blocked: list[str] = []

    def only_the_app(route) -> None:
        url = route.request.url
        if url.startswith((origin, "data:", "blob:")):
            route.continue_()
        else:
            blocked.append(url)
            route.abort()

    with browser_page() as page:
        page.route("**/*", only_the_app)
        page.goto(base_url + DOCS)
        page.get_by_text(expect_text, exact=True).first.wait_for(timeout=30_000)
    return blocked

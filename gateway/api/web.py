"""The web page: ``GET /`` and its static files under ``/web/``, served as they are (no build step).

The page (``gateway/web/``: HTML, CSS and JavaScript modules) is a client of the same ``/v1`` API
as any other, authenticated by the key the user pastes. A strict Content-Security-Policy keeps
that key out of reach of injected scripts: only this origin's scripts and styles run, and media
come from this origin or the ``blob:`` URLs the page makes from authenticated downloads.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter
from fastapi.responses import FileResponse

from gateway.errors import NotFound

WEB_DIR = Path(__file__).resolve().parent.parent / "web"
_MEDIA_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
}
#: The files that may be served, by name: nothing outside this folder can be reached.
FILES = {p.name: p for p in sorted(WEB_DIR.iterdir()) if p.suffix in _MEDIA_TYPES}
CONTENT_SECURITY_POLICY = "; ".join(
    (
        "default-src 'none'",
        "script-src 'self'",
        "style-src 'self'",
        "img-src 'self' blob: data:",
        "media-src 'self' blob:",
        "connect-src 'self'",
        "base-uri 'none'",
        "form-action 'self'",
        "frame-ancestors 'none'",
    )
)
_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",  # revalidate (ETag) so a new release is picked up at once
}

router = APIRouter(include_in_schema=False)


def _serve(name: str) -> FileResponse:
    path = FILES.get(name)
    if path is None:
        raise NotFound(f"no file {name!r} in the web page")
    return FileResponse(path, media_type=_MEDIA_TYPES[path.suffix], headers=_HEADERS)


@router.get("/")
async def read_page() -> FileResponse:
    """The web page."""
    return _serve("index.html")


@router.get("/web/{name}")
async def read_web_file(name: str) -> FileResponse:
    """A script or style sheet of the web page."""
    return _serve(name)

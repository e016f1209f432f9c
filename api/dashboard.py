"""GET / and GET /ui/{name}: the web dashboard's files, shipped in the package (no CDN, no build step)."""

from __future__ import annotations

import hashlib
from pathlib import Path

import falcon

UI_DIR = Path(__file__).with_name("ui")
_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".svg": "image/svg+xml",
}
# Everything the page loads comes from this server; the page talks only to this server's API.
_CSP = (
    "default-src 'self'; img-src 'self' data: blob:; connect-src 'self'; style-src 'self'; "
    "script-src 'self'; object-src 'none'; base-uri 'none'; frame-ancestors 'none'; form-action 'self'"
)


class DashboardResource:
    """Serves ui/index.html at / and the files next to it at /ui/{name}. The files are read once at
    start; only those names exist, so a request's text never reaches a path. Carries no job data:
    the page asks the API for that (with the user's key), so it needs no key itself."""

    def __init__(self, ui_dir: Path = UI_DIR) -> None:
        self._files: dict[str, tuple[bytes, str, str]] = {}
        for path in sorted(ui_dir.iterdir()):
            if path.suffix in _TYPES and path.is_file():
                body = path.read_bytes()
                etag = hashlib.sha256(body).hexdigest()[:16]
                self._files[path.name] = (body, _TYPES[path.suffix], etag)

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        self._send(req, resp, "index.html")

    def on_get_asset(self, req: falcon.Request, resp: falcon.Response, name: str) -> None:
        if name not in self._files or name == "index.html":
            raise falcon.HTTPNotFound(
                title="Unknown dashboard file",
                description=f"There is no dashboard file named {name!r}; the dashboard is at /.",
            )
        self._send(req, resp, name)

    def _send(self, req: falcon.Request, resp: falcon.Response, name: str) -> None:
        body, content_type, etag = self._files[name]
        resp.etag = etag
        resp.cache_control = ["no-cache"]  # revalidate each time: a new release shows at once, cheaply
        resp.set_header("X-Content-Type-Options", "nosniff")
        resp.set_header("Content-Security-Policy", _CSP)
        resp.set_header("Referrer-Policy", "no-referrer")
        if req.get_header("If-None-Match") == f'"{etag}"':
            resp.status = falcon.HTTP_304
            return
        resp.content_type = content_type
        resp.data = body

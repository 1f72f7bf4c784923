"""Third-party browser code the dashboard needs, served from installed Python packages
(no CDN: the machines have no internet, and no build step).

``GET /vendor/plotly.min.js`` is the minified Plotly.js bundle that the ``plotly`` package
ships. It is read once per process, gzip-compressed once (4.8 MB → about 1.4 MB) for clients
that accept it, and served with a validator (ETag: a hash of the bundle) and a
day of caching, so the browser keeps its compiled copy between page loads.
"""

from __future__ import annotations

import gzip
import hashlib
from dataclasses import dataclass
from functools import cache
from pathlib import Path

from fastapi import APIRouter, Request, Response

from dynascope.server.errors import NotFoundError

router = APIRouter(tags=["dashboard"], include_in_schema=False)

CACHE_CONTROL = "public, max-age=86400"


@dataclass(frozen=True)
class VendoredFile:
    """A file's bytes, its gzip-compressed bytes and its entity tag."""

    raw: bytes
    compressed: bytes
    etag: str


def plotly_bundle_path() -> Path:
    """Where the installed ``plotly`` package keeps its minified Plotly.js bundle."""
    try:
        import plotly
    except ImportError as error:
        raise NotFoundError(
            "the plotly package is not installed, so the dashboard has no Plotly.js; "
            "install dynascope with its dependencies (pip install -e .)"
        ) from error
    return Path(plotly.__file__).resolve().parent / "package_data" / "plotly.min.js"


@cache
def _plotly_bundle() -> VendoredFile:
    path = plotly_bundle_path()
    if not path.is_file():
        raise NotFoundError(f"the plotly package has no bundled Plotly.js at {path}")
    raw = path.read_bytes()
    digest = hashlib.sha1(raw, usedforsecurity=False)
    return VendoredFile(raw=raw, compressed=gzip.compress(raw, 6), etag=f'"{digest.hexdigest()}"')


@router.get("/vendor/plotly.min.js")
def plotly_js(request: Request) -> Response:
    """The Plotly.js bundle of the installed plotly package (gzip when accepted)."""
    bundle = _plotly_bundle()
    headers = {"ETag": bundle.etag, "Cache-Control": CACHE_CONTROL, "Vary": "Accept-Encoding"}
    if bundle.etag in request.headers.get("if-none-match", ""):
        return Response(status_code=304, headers=headers)
    body = bundle.raw
    if "gzip" in request.headers.get("accept-encoding", ""):
        body = bundle.compressed
        headers["Content-Encoding"] = "gzip"
    return Response(body, media_type="text/javascript; charset=utf-8", headers=headers)

"""Third-party browser code the dashboard needs, served locally (no CDN: the machines have no
internet, and no build step).

- ``GET /vendor/plotly.min.js``: the full minified Plotly.js bundle that the ``plotly`` Python
  package ships (4.8 MB; every trace type, 3-D included).
- ``GET /vendor/plotly-cartesian.min.js``: Plotly.js's official "cartesian" bundle (1.5 MB;
  scatter, bar, heatmap, contour and a few more, no 3-D), vendored in ``frontend/vendor/``
  from the npm package ``plotly.js-cartesian-dist-min`` of the same Plotly.js version (MIT,
  licence beside it), because the Python package ships only the full bundle. Pages without a
  3-D chart load this one: a third of the JavaScript to compile on a cold load.

Each is read once per process, gzip-compressed once for clients that accept it, and served
with a validator (ETag: a hash of the bundle) and a day of caching, so the browser keeps its
compiled copy between page loads.
"""

from __future__ import annotations

import gzip
import hashlib
from dataclasses import dataclass
from functools import cache
from pathlib import Path

from fastapi import APIRouter, Request, Response

import dynascope.frontend
from dynascope.server.errors import NotFoundError

router = APIRouter(tags=["dashboard"], include_in_schema=False)

CACHE_CONTROL = "public, max-age=86400"
VENDORED = Path(dynascope.frontend.__file__).resolve().parent / "vendor"
CARTESIAN_BUNDLE = VENDORED / "plotly-cartesian.min.js"


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
def _vendored(path: Path) -> VendoredFile:
    if not path.is_file():
        raise NotFoundError(f"no Plotly.js bundle at {path}: reinstall dynascope")
    raw = path.read_bytes()
    digest = hashlib.sha1(raw, usedforsecurity=False)
    return VendoredFile(raw=raw, compressed=gzip.compress(raw, 6), etag=f'"{digest.hexdigest()}"')


def _serve(bundle: VendoredFile, request: Request) -> Response:
    headers = {"ETag": bundle.etag, "Cache-Control": CACHE_CONTROL, "Vary": "Accept-Encoding"}
    if bundle.etag in request.headers.get("if-none-match", ""):
        return Response(status_code=304, headers=headers)
    body = bundle.raw
    if "gzip" in request.headers.get("accept-encoding", ""):
        body = bundle.compressed
        headers["Content-Encoding"] = "gzip"
    return Response(body, media_type="text/javascript; charset=utf-8", headers=headers)


@router.get("/vendor/plotly.min.js")
def plotly_js(request: Request) -> Response:
    """The full Plotly.js bundle of the installed plotly package (gzip when accepted)."""
    return _serve(_vendored(plotly_bundle_path()), request)


@router.get("/vendor/plotly-cartesian.min.js")
def plotly_cartesian_js(request: Request) -> Response:
    """Plotly.js's cartesian bundle, vendored with the dashboard (gzip when accepted)."""
    return _serve(_vendored(CARTESIAN_BUNDLE), request)

"""mmcv's source distribution for tools/setup_env.sh: fetched without running its setup.py, and that
setup.py patched so that it builds on every supported Python and torch.

``pip download`` cannot fetch the sdist: it prepares the sdist's metadata by running setup.py, and
mmcv 2.1.0's setup.py fails on Python 3.13 (see :func:`patch_setup`). So the file is looked up in
the package indexes and find-links that pip is configured with (``pip config list``), the way pip
would find it, and downloaded with its published sha256 checked. Standard library only: it runs
before anything else is installed.

    python mmcv_source.py fetch NAME VERSION DEST_DIR   # prints the path of the downloaded sdist
    python mmcv_source.py patch SETUP_PY [--cxx-std c++20]
"""
from __future__ import annotations

import argparse
import hashlib
import html.parser
import re
import shutil
import ssl
import subprocess
import sys
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Dict, Iterator, List, Optional, Tuple

DEFAULT_INDEX = "https://pypi.org/simple"
#: Scopes of ``pip config list`` that ``pip download`` reads, the strongest first.
SCOPES = (":env:", "download", "global")
#: What mmcv 2.1.0's ``get_version`` does, and what it does instead after :func:`patch_setup`: its
#: ``exec`` writes into ``locals()``, and from Python 3.13 on (PEP 667) a later ``locals()`` no
#: longer sees what ``exec`` wrote there (``KeyError: '__version__'``); an explicit namespace works
#: on every Python.
VERSION_EXEC = ("exec(compile(f.read(), version_file, 'exec'))",
                "exec(compile(f.read(), version_file, 'exec'), version_scope := {})")
VERSION_READ = ("return locals()['__version__']", "return version_scope['__version__']")
CXX_STD = "-std=c++17"


def _canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def pip_settings(listing: str) -> Dict[str, List[str]]:
    """``index-url``, ``extra-index-url``, ``find-links`` and ``cert`` from ``pip config list``'s
    output, each from the strongest scope that sets it, split on whitespace as pip does."""
    found: Dict[Tuple[str, str], str] = {}
    for line in listing.splitlines():
        match = re.match(r"^(.*)\.([a-z-]+)='(.*)'$", line.strip())
        if match:
            found[(match.group(1), match.group(2))] = match.group(3)
    settings = {}
    for key in ("index-url", "extra-index-url", "find-links", "cert"):
        scope = next((s for s in SCOPES if (s, key) in found), None)
        settings[key] = found[(scope, key)].split() if scope else []
    return settings


class _Links(html.parser.HTMLParser):
    """The ``href`` of every ``<a>`` of a PEP 503 page."""

    def __init__(self) -> None:
        super().__init__()
        self.hrefs: List[str] = []

    def handle_starttag(self, tag: str, attrs: List[Tuple[str, Optional[str]]]) -> None:
        href = dict(attrs).get("href")
        if tag == "a" and href:
            self.hrefs.append(href)


def _local_path(location: str) -> Optional[Path]:
    if location.startswith("file:"):
        return Path(urllib.request.url2pathname(urllib.parse.urlparse(location).path))
    return None if "://" in location else Path(location)


def _read(url: str, context: ssl.SSLContext) -> bytes:
    request = urllib.request.Request(url, headers={"Accept": "text/html"})
    with urllib.request.urlopen(request, timeout=180, context=context) as response:
        return response.read()


def candidates(location: str, project: str, context: ssl.SSLContext,
               index: bool) -> Iterator[str]:
    """URLs of the files that ``location`` offers for ``project``: a simple index (its
    ``project/`` page) or a find-links location (a folder, or a page of links). Where a location
    cannot be read it offers nothing, as for pip."""
    base = location.rstrip("/") + f"/{_canonical(project)}/" if index else location
    path = _local_path(base)
    if path is not None and path.is_dir():
        if not (path / "index.html").is_file():
            yield from (p.resolve().as_uri() for p in sorted(path.iterdir()))
            return
        base = (path / "index.html").resolve().as_uri()
    elif path is not None:
        base = path.resolve().as_uri()
    try:
        page = _read(base, context).decode("utf-8", "replace")
    except (OSError, ValueError):
        return
    parser = _Links()
    parser.feed(page)
    yield from (urllib.parse.urljoin(base, href) for href in parser.hrefs)


def is_sdist(url: str, project: str, version: str) -> bool:
    name = urllib.parse.unquote(urllib.parse.urlparse(url).path.rsplit("/", 1)[-1])
    match = re.match(r"^(.+)-([^-]+)\.(tar\.gz|zip)$", name)
    return bool(match) and _canonical(match.group(1)) == _canonical(project) \
        and match.group(2) == version


def find_sdist(settings: Dict[str, List[str]], project: str, version: str,
               context: ssl.SSLContext) -> str:
    """The first sdist of ``project==version`` in the indexes (the main one, then the extra
    ones) and then the find-links locations."""
    indexes = (settings["index-url"] or [DEFAULT_INDEX]) + settings["extra-index-url"]
    places = [(i, True) for i in indexes] + [(f, False) for f in settings["find-links"]]
    for location, index in places:
        for url in candidates(location, project, context, index):
            if is_sdist(url, project, version):
                return url
    raise LookupError(f"no source distribution of {project}=={version} in the package indexes "
                      f"{indexes} or find-links {settings['find-links']} (from `pip config list`)")


def download(url: str, dest_dir: Path, context: ssl.SSLContext) -> Path:
    """Copies ``url`` into ``dest_dir``; checks the ``#sha256=`` the index published with it."""
    location, _, fragment = url.partition("#")
    target = dest_dir / urllib.parse.unquote(location.rsplit("/", 1)[-1])
    dest_dir.mkdir(parents=True, exist_ok=True)
    request = urllib.request.Request(location)
    with urllib.request.urlopen(request, timeout=180, context=context) as response, \
            target.open("wb") as out:
        shutil.copyfileobj(response, out)
    algorithm, _, expected = fragment.partition("=")
    if algorithm in hashlib.algorithms_guaranteed and expected:
        got = hashlib.new(algorithm, target.read_bytes()).hexdigest()
        if got != expected:
            target.unlink()
            raise ValueError(f"{location}: {algorithm} {got}, but the index published {expected}")
    return target


def patch_setup(text: str, cxx_std: Optional[str] = None) -> str:
    """mmcv's setup.py made to run on Python 3.10-3.13 (:data:`VERSION_EXEC`), and to compile
    with ``-std=<cxx_std>`` where torch's headers need another standard than its c++17."""
    for old, new in (VERSION_EXEC, VERSION_READ):
        if text.count(old) != 1:
            raise ValueError(f"mmcv's setup.py does not read its version as expected (one "
                             f"`{old}`): this patch is for mmcv 2.1.0")
        text = text.replace(old, new)
    if cxx_std is not None:
        if CXX_STD not in text:
            raise ValueError(f"mmcv's setup.py has no {CXX_STD} to replace by -std={cxx_std}")
        text = text.replace(CXX_STD, f"-std={cxx_std}")
    return text


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    fetch = commands.add_parser("fetch", help="download the sdist; print its path")
    fetch.add_argument("project")
    fetch.add_argument("version")
    fetch.add_argument("dest_dir", type=Path)
    patch = commands.add_parser("patch", help="patch mmcv's setup.py in place")
    patch.add_argument("setup_py", type=Path)
    patch.add_argument("--cxx-std", help="the C++ standard to compile with, e.g. c++20")
    args = parser.parse_args(argv)
    try:
        if args.command == "fetch":
            listing = subprocess.run([sys.executable, "-m", "pip", "config", "list"], check=True,
                                     capture_output=True, text=True).stdout
            settings = pip_settings(listing)
            context = ssl.create_default_context(cafile=(settings["cert"] or [None])[0])
            url = find_sdist(settings, args.project, args.version, context)
            print(download(url, args.dest_dir, context))
        else:
            args.setup_py.write_text(patch_setup(args.setup_py.read_text(), args.cxx_std))
    except (LookupError, ValueError, OSError) as err:
        print(f"mmcv_source: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

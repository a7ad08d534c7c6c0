"""tools/env/mmcv_source.py: how the setup finds mmcv's sdist without running its setup.py, and the
patch that lets that setup.py run on every supported Python (3.13 included: the CI's guard that the
declared range stays true without a whole 3.13 setup)."""
from __future__ import annotations

import hashlib
import re
import shutil
import ssl
import subprocess
import sys
from pathlib import Path
from typing import Dict, List, Optional

import pytest

from kit import load_tool

mmcv_source = load_tool("env/mmcv_source")
CONTEXT = ssl.create_default_context()

#: The parts of mmcv 2.1.0's setup.py that the patch touches, as they are there.
MMCV_SHAPED_SETUP = """\
def get_version():
    version_file = 'mmcv/version.py'
    with open(version_file, encoding='utf-8') as f:
        exec(compile(f.read(), version_file, 'exec'))
    return locals()['__version__']


extra_compile_args = {'cxx': ['-Wall', '-std=c++17']}
print(get_version(), extra_compile_args['cxx'][-1])
"""


def _interpreter(minor: int) -> Optional[str]:
    """A Python 3.<minor> on PATH or among pyenv's versions, else None."""
    names = [shutil.which(f"python3.{minor}")]
    if shutil.which("pyenv"):
        root = subprocess.run(["pyenv", "root"], capture_output=True, text=True).stdout.strip()
        versions = subprocess.run(["pyenv", "versions", "--bare"], capture_output=True,
                                  text=True).stdout.split()
        names += [f"{root}/versions/{v}/bin/python3.{minor}" for v in versions
                  if v.startswith(f"3.{minor}.")]
    for name in filter(None, names):
        probe = subprocess.run([name, "-c", "import sys; print(sys.version_info[1])"],
                               capture_output=True, text=True)
        if probe.returncode == 0 and probe.stdout.strip() == str(minor):
            return name
    return None


def _run_setup(python: str, text: str, tmp_path: Path) -> subprocess.CompletedProcess:
    (tmp_path / "mmcv").mkdir(exist_ok=True)
    (tmp_path / "mmcv" / "version.py").write_text("__version__ = '2.1.0'\n")
    (tmp_path / "setup.py").write_text(text)
    return subprocess.run([python, "setup.py"], cwd=tmp_path, capture_output=True, text=True)


@pytest.mark.parametrize("minor", [10, 11, 12, 13])
def test_patched_setup_reads_its_version_on_every_supported_python(minor, tmp_path):
    """The patched setup.py runs on each supported Python found here; on 3.13 the unpatched one
    fails as mmcv's does (PEP 667), so this test sees the breakage it guards against."""
    python = sys.executable if sys.version_info[:2] == (3, minor) else _interpreter(minor)
    if python is None:
        pytest.skip(f"no Python 3.{minor} here (PATH, pyenv)")
    patched = mmcv_source.patch_setup(MMCV_SHAPED_SETUP, "c++20")
    ran = _run_setup(python, patched, tmp_path)
    assert ran.returncode == 0, ran.stderr
    assert ran.stdout == "2.1.0 -std=c++20\n"
    unpatched = _run_setup(python, MMCV_SHAPED_SETUP, tmp_path)
    if minor >= 13:
        assert unpatched.returncode == 1 and "KeyError: '__version__'" in unpatched.stderr
    else:
        assert unpatched.stdout == "2.1.0 -std=c++17\n"


def test_patch_without_a_standard_keeps_cxx17_and_refuses_another_setup_py():
    assert mmcv_source.patch_setup(MMCV_SHAPED_SETUP).count("-std=c++17") == 1
    with pytest.raises(ValueError, match=r"does not read its version as expected.*mmcv 2\.1\.0"):
        mmcv_source.patch_setup(MMCV_SHAPED_SETUP.replace("locals()", "vars()"))
    with pytest.raises(ValueError, match=r"no -std=c\+\+17 to replace by -std=c\+\+20"):
        mmcv_source.patch_setup(MMCV_SHAPED_SETUP.replace("c++17", "c++14"), "c++20")


def test_pip_settings_take_each_key_from_its_strongest_scope():
    listing = "\n".join([
        "global.index-url='https://mirror.example/simple'",
        "global.extra-index-url='file:///a/simple file:///b/simple'",
        "download.extra-index-url='file:///c/simple'",
        ":env:.find-links='/opt/wheels'",
        "global.find-links='/elsewhere'",
        "install.cert='/ignored.crt'",
        "global.timeout='60'",
    ])
    assert mmcv_source.pip_settings(listing) == {
        "index-url": ["https://mirror.example/simple"],
        "extra-index-url": ["file:///c/simple"],
        "find-links": ["/opt/wheels"],
        "cert": [],
    }


def _index(root: Path, files: Dict[str, bytes], sha: Dict[str, str]) -> str:
    """A PEP 503 index at ``root`` whose mmcv page links ``files`` (kept in ``root/files``)."""
    (root / "files").mkdir(parents=True)
    links = []
    for name, data in files.items():
        (root / "files" / name).write_bytes(data)
        digest = sha.get(name, hashlib.sha256(data).hexdigest())
        links.append(f'<a href="../../files/{name}#sha256={digest}">{name}</a>')
    (root / "simple" / "mmcv").mkdir(parents=True)
    page = "<html><body>" + "".join(links) + "</body></html>"
    (root / "simple" / "mmcv" / "index.html").write_text(page)
    return (root / "simple").as_uri()


def _settings(index: List[str], extra: List[str] = (),
              find_links: List[str] = ()) -> Dict[str, List[str]]:
    return {"index-url": list(index), "extra-index-url": list(extra),
            "find-links": list(find_links), "cert": []}


def test_sdist_is_found_in_an_extra_index_and_downloaded_with_its_hash_checked(tmp_path):
    """The main index has no mmcv page, the first extra one has only wheels and other versions;
    the second has the sdist, linked relatively, as a file:// index does."""
    empty = tmp_path / "empty" / "simple"
    empty.mkdir(parents=True)
    wheels = _index(tmp_path / "one", {"mmcv-2.1.0-cp311-cp311-linux_x86_64.whl": b"w",
                                       "mmcv-2.0.1.tar.gz": b"old"}, {})
    sdist = _index(tmp_path / "two", {"mmcv-2.1.0.tar.gz": b"the sdist"}, {})
    settings = _settings([empty.as_uri()], [wheels, sdist])
    url = mmcv_source.find_sdist(settings, "mmcv", "2.1.0", CONTEXT)
    assert re.fullmatch(r"file://.*/two/files/mmcv-2\.1\.0\.tar\.gz#sha256=[0-9a-f]{64}", url)
    got = mmcv_source.download(url, tmp_path / "dest", CONTEXT)
    assert got == tmp_path / "dest" / "mmcv-2.1.0.tar.gz" and got.read_bytes() == b"the sdist"


def test_a_download_whose_hash_differs_is_refused_and_removed(tmp_path):
    index = _index(tmp_path / "bad", {"mmcv-2.1.0.tar.gz": b"tampered"},
                   {"mmcv-2.1.0.tar.gz": "0" * 64})
    url = mmcv_source.find_sdist(_settings([index]), "mmcv", "2.1.0", CONTEXT)
    with pytest.raises(ValueError, match="but the index published 0000"):
        mmcv_source.download(url, tmp_path / "dest", CONTEXT)
    assert not (tmp_path / "dest" / "mmcv-2.1.0.tar.gz").exists()


def test_sdist_is_found_in_a_find_links_folder_and_a_miss_names_where_it_looked(tmp_path):
    links = tmp_path / "wheels"
    links.mkdir()
    (links / "MMCV-2.1.0.tar.gz").write_bytes(b"x")  # names compare as pip normalises them
    missing = (tmp_path / "nowhere" / "simple").as_uri()
    url = mmcv_source.find_sdist(_settings([missing], find_links=[str(links)]), "mmcv", "2.1.0",
                                 CONTEXT)
    assert url == (links / "MMCV-2.1.0.tar.gz").as_uri()
    with pytest.raises(LookupError, match=r"no source distribution of mmcv==2\.2\.0 in the package "
                                          r"indexes \['file://.*nowhere/simple'\]"):
        mmcv_source.find_sdist(_settings([missing], find_links=[str(links)]), "mmcv", "2.2.0",
                               CONTEXT)

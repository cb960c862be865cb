"""Numba's on-disk cache for the kernels, invalidated by an edit to any kernel source.

Numba stamps a cached function with the one file that defines it (its content hash, or its
modification time and size in older Numba). Our kernels inline helpers from other files
(``cpu/common.py`` into ``cpu/linear.py``, both into the drivers of ``cpu/epoch.py``), so an
edit to a helper left the callers' stale machine code in the cache, silently: an editable
install that pulled a change to ``linear.py`` alone kept running the old
``linear_serial_epoch``. :func:`install` puts locators in front of Numba's
own that stamp every function defined under ``kernels/`` with Numba's own stamp and the
hash of all the ``.py`` files there. They find the same cache directories as Numba's
(``NUMBA_CACHE_DIR``, the ``__pycache__`` beside the file, the user-wide directory) and
decline any other function.
"""

from __future__ import annotations

import functools
import hashlib
import os
from pathlib import Path

from numba.core import caching

KERNEL_DIR = Path(__file__).resolve().parent


def _sources() -> list[Path]:
    return sorted(KERNEL_DIR.rglob("*.py"))


@functools.lru_cache(maxsize=8)
def _hash(stats: tuple) -> bytes:
    # ``stats`` (path, mtime, size per file) is the memo key, so an edit made while the
    # process runs is seen; the stamp itself is a content hash
    digest = hashlib.sha256()
    for path, _, _ in stats:
        digest.update(os.path.relpath(path, KERNEL_DIR).encode())
        digest.update(Path(path).read_bytes())
    return digest.digest()


def tree_stamp() -> bytes:
    """Content hash of every ``.py`` file under ``kernels/``."""
    stats = []
    for path in _sources():
        st = path.stat()
        stats.append((str(path), st.st_mtime_ns, st.st_size))
    return _hash(tuple(stats))


def _is_kernel_source(py_file: str) -> bool:
    try:
        return Path(py_file).resolve().is_relative_to(KERNEL_DIR)
    except OSError:
        return False


class _KernelTreeStamp:
    """Locator mixin: kernel functions only, stamped with the whole kernel tree."""

    def get_source_stamp(self):
        # Numba's stamp too: in a frozen app (no .py files) it stamps the executable
        return super().get_source_stamp(), tree_stamp()

    @classmethod
    def from_function(cls, py_func, py_file):
        if not _is_kernel_source(py_file):
            return None
        return super().from_function(py_func, py_file)


def _numba_locator(name: str):
    # public names in recent Numba (0.68 has them), underscored in older releases
    return getattr(caching, name, None) or getattr(caching, "_" + name)


def _kernel_locators() -> list[type]:
    return [type(f"KernelTree{name}", (_KernelTreeStamp, _numba_locator(name)), {})
            for name in ("UserProvidedCacheLocator", "InTreeCacheLocator",
                         "UserWideCacheLocator")]


def install() -> None:
    """Put the kernel-tree locators first in Numba's list (once; before any kernel is
    decorated, since ``cache=True`` picks its locator at decoration)."""
    impl = caching.CompileResultCacheImpl
    if any(issubclass(cls, _KernelTreeStamp) for cls in impl._locator_classes):
        return
    impl._locator_classes = _kernel_locators() + list(impl._locator_classes)

"""Numba CPU kernels."""

from ..cache import install as _install_cache_locators

# before any kernel module here is imported: ``cache=True`` picks its locator at decoration
_install_cache_locators()

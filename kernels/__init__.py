"""Hand-written kernels, installed as ``fastgd.kernels``."""

from .cache import install as _install_cache_locators

# before any kernel module is imported: ``cache=True`` picks its cache locator at decoration
_install_cache_locators()

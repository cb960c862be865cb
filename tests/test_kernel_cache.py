"""The kernels' Numba cache is stamped with the whole kernel tree (kernels/cache.py)."""

import shutil

import numba
import numpy as np

from fastgd.kernels import cache
from fastgd.kernels.cpu import epoch, linear


def test_kernel_functions_use_the_tree_locator():
    """Every cached kernel, the copied epoch drivers included, is stamped by the tree."""
    for fn in (epoch.driver("linear", "serial", 0, 0), epoch.driver("dense", "grouped", 1, 2),
               epoch.linear_loss, linear.group_rows):
        locator = fn._cache._impl.locator
        assert isinstance(locator, cache._KernelTreeStamp)
        assert locator.get_source_stamp()[1] == cache.tree_stamp()


def test_other_functions_keep_numbas_locator(tmp_path):
    """A user's own cached function is left to Numba's locators."""
    src = tmp_path / "user_mod.py"
    src.write_text("import numba\n@numba.njit(cache=True)\ndef f(x):\n    return x + 1\n")
    namespace = {"__file__": str(src)}
    exec(compile(src.read_text(), str(src), "exec"), namespace)
    locator = namespace["f"]._cache._impl.locator
    assert not isinstance(locator, cache._KernelTreeStamp)
    assert namespace["f"](np.float64(1.0)) == 2.0


def test_stamp_follows_any_kernel_file(tmp_path, monkeypatch):
    """Editing a helper file (not the caller's own file) changes every kernel's stamp."""
    tree = tmp_path / "kernels"
    shutil.copytree(cache.KERNEL_DIR, tree, ignore=shutil.ignore_patterns("__pycache__"))
    monkeypatch.setattr(cache, "KERNEL_DIR", tree)
    before = cache.tree_stamp()
    helper = tree / "cpu" / "common.py"
    text = helper.read_text()
    helper.write_text(text + "\n# an edit\n")
    edited = cache.tree_stamp()
    helper.write_text(text)
    assert edited != before
    assert cache.tree_stamp() == before


def test_install_is_idempotent():
    """Installing twice does not stack locators."""
    cache.install()
    cache.install()
    classes = numba.core.caching.CompileResultCacheImpl._locator_classes
    assert sum(issubclass(c, cache._KernelTreeStamp) for c in classes) == 3

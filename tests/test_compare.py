"""compare / sweep_batch_size / measure: fields present and sane, failures become rows."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest

import fastgd as fg
from fastgd.compare import measure
from fastgd.measure import within_tolerance


@pytest.fixture
def regression(rng):
    X = rng.standard_normal((3000, 12))  # float64: fit converts it, so the run copies data
    y = X @ rng.standard_normal(12) + 0.01 * rng.standard_normal(3000)
    return X, y


def test_measure_fields_are_sane(regression):
    """Throughput > 0, medians within min/max, loss decreasing, memory > the copied data."""
    X, y = regression
    row = measure(fg.Linear(12), X, y, backend="numba-cpu", mode="mbgd", batch_size=64,
                      epochs=3, lr=0.05, repeats=3, target_loss=1.0)
    assert row["status"] == "ok" and row["epochs"] == 3 and row["repeats"] == 3
    assert row["samples_per_s_min"] <= row["samples_per_s"] <= row["samples_per_s_max"]
    assert row["samples_per_s"] > 0 and row["steps_per_s"] > 0
    assert row["steps_per_epoch"] == 3000 // 64 + 1
    np.testing.assert_allclose(row["step_s"] * row["steps_per_epoch"], row["epoch_s"])
    assert row["compile_s"] >= 0
    losses = row["train_loss"]
    assert len(losses) == 3 and losses[-1] < losses[0]
    assert row["samples_seen"] == [3000, 6000, 9000]
    assert row["elapsed_s"] == sorted(row["elapsed_s"])
    data_bytes = X.size * 4 + y.size * 4  # converted to float32 by fit
    assert row["peak_traced_bytes"] > data_bytes
    assert within_tolerance(row["peak_traced_bytes"], row["estimate_bytes"])
    assert row["epochs_to_target"] is not None and row["time_to_target_s"] > 0
    json.dumps(row)  # plain data


def test_target_never_reached_is_none(regression):
    X, y = regression
    row = measure(fg.Linear(12), X, y, backend="numpy", mode="bgd", epochs=1, lr=1e-4,
                      repeats=1, target_loss=1e-9, trace_memory=False)
    assert row["time_to_target_s"] is None and row["epochs_to_target"] is None
    assert row["peak_traced_bytes"] is None


def test_compare_survives_failures(regression):
    """Unavailable backend, oversize batch and divergence are rows, not exceptions."""
    X, y = regression
    table = fg.compare(fg.Linear(12), X, y * 1e3, modes=("sgd", "mbgd"), batch_sizes=(16, 10**6),
                       backends=("numba-cpu",), epochs=2, lr=5.0, repeats=1)
    status = {(r["mode"], r["batch_size"]): r["status"] for r in table.rows}
    assert status[("mbgd", 10**6)] == "skipped"
    assert status[("sgd", 1)] == "diverged"
    diverged = next(r for r in table.rows if r["status"] == "diverged")
    assert "diverged" in diverged["reason"] and len(diverged["train_loss"]) >= 1


def test_compare_unavailable_backend(regression, monkeypatch):
    X, y = regression
    monkeypatch.setattr(fg.backends, "describe",
                        lambda: {"numpy": None, "numba-cpu": "numba missing (test)"})
    table = fg.compare(fg.Linear(12), X, y, modes=("bgd",), backends=("numpy", "numba-cpu"),
                       epochs=1, repeats=1, trace_memory=False)
    rows = {r["backend"]: r for r in table.rows}
    assert rows["numpy"]["status"] == "ok"
    assert rows["numba-cpu"]["status"] == "unavailable"
    assert "numba missing" in rows["numba-cpu"]["reason"]


def test_compare_bad_input_raises_up_front(regression):
    X, y = regression
    with pytest.raises(ValueError, match="X"):
        fg.compare(fg.Linear(5), X, y, repeats=1)
    with pytest.raises(ValueError, match="backend"):
        fg.compare(fg.Linear(12), X, y, backends=("nope",), repeats=1)
    with pytest.raises(ValueError, match="modes"):
        fg.compare(fg.Linear(12), X, y, modes=("fast",), repeats=1)


def test_same_start_and_reproducible(rng):
    """Every configuration starts from init_params(seed); the same seed repeats the losses."""
    X = rng.standard_normal((400, 6)).astype(np.float32)
    y = rng.integers(0, 3, 400)
    model = fg.MLP([6, 8, 3])
    kw = dict(modes=("mbgd",), batch_sizes=(8, 32), backends=("numpy", "numba-cpu"), epochs=2,
              lr=0.1, repeats=1, seed=5, trace_memory=False)
    a, b = fg.compare(model, X, y, **kw), fg.compare(model, X, y, **kw)
    for ra, rb in zip(a.rows, b.rows, strict=True):
        assert ra["train_loss"] == rb["train_loss"]
    by = {(r["backend"], r["batch_size"]): r["train_loss"] for r in a.rows}
    np.testing.assert_allclose(by[("numpy", 8)], by[("numba-cpu", 8)], rtol=1e-4)


def test_table_outputs(regression, tmp_path):
    X, y = regression
    table = fg.compare(fg.Linear(12), X, y, modes=("bgd", "mbgd"), batch_sizes=(64,),
                       backends=("numba-cpu",), epochs=2, repeats=1)
    md = table.to_markdown()
    assert md.count("\n") == 1 + len(table.rows) and "numba-cpu" in md
    table.to_csv(tmp_path / "t.csv")
    with open(tmp_path / "t.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 2 and json.loads(rows[0]["train_loss"])
    table.to_json(tmp_path / "t.json")
    data = json.loads((tmp_path / "t.json").read_text())
    assert data["meta"]["n"] == 3000 and len(data["rows"]) == 2


def test_sweep_batch_size_stops_at_budget(rng):
    """Powers of two up to the largest batch whose estimate fits; the next one is listed
    as skipped with the reason."""
    X = rng.standard_normal((4096, 64)).astype(np.float32)
    y = X @ rng.standard_normal(64).astype(np.float32)
    model = fg.Linear(64)
    kw = dict(backend="numpy", epochs=1, lr=0.002, repeats=1, trace_memory=False)
    full = fg.sweep_batch_size(model, X, y, max_batch=8, **kw)
    assert [r["batch_size"] for r in full.rows] == [1, 2, 4, 8]
    big = fg.sweep_batch_size(model, X, y, max_batch=1024, **kw)
    assert all(r["status"] == "ok" for r in big.rows)
    est = {r["batch_size"]: r["estimate_bytes"] for r in big.rows}
    assert est[1024] > est[64]  # large batches need more memory
    budget = est[64]
    swept = fg.sweep_batch_size(model, X, y, memory_budget=budget, **kw)
    ok = [r for r in swept.rows if r["status"] == "ok"]
    assert 64 in [r["batch_size"] for r in ok]
    assert all(r["estimate_bytes"] <= budget for r in ok)
    last = swept.rows[-1]
    assert last["status"] == "skipped" and "budget" in last["reason"]
    assert last["batch_size"] == 2 * ok[-1]["batch_size"] < 4096

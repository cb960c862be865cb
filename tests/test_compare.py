"""compare / sweep_batch_size / measure: fields present and sane, failures become rows."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest

import fastgd as fg
from fastgd.compare import LinearScaling, Table, format_cell, measure
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


# --------------------------------------------------------------------------- lr rule


def test_linear_scaling_rule():
    """lr(B) = base * B / ref, capped; a warm-up from base only where the rate is scaled
    up, over warmup_fraction of the steps, before the study's own schedule."""
    rule = LinearScaling(base_lr=0.1, max_lr=0.5, ref_batch=32)
    assert [rule.lr(b) for b in (1, 32, 64, 160, 4096)] == pytest.approx(
        [0.1 / 32, 0.1, 0.2, 0.5, 0.5])
    assert rule.schedule(1, 1000) is None and rule.schedule(32, 1000, then="cosine") == "cosine"
    warm = rule.schedule(4096, 200)
    assert isinstance(warm, fg.Warmup) and warm.steps == 10
    assert warm.start_factor == pytest.approx(0.1 / 0.5)
    rates = warm.rates(0.5, 0, 1, 0, 12)
    assert rates[0] == pytest.approx(0.1) and rates[-1] == pytest.approx(0.5)
    assert np.all(np.diff(rates) >= 0)
    assert isinstance(rule.schedule(64, 3, then=fg.Cosine()).then, fg.Cosine)
    assert rule.schedule(64, 3).steps == 1  # at least one step
    assert LinearScaling(0.1, 0.5, warmup_fraction=0).schedule(4096, 100) is None
    for bad in (dict(base_lr=0.0, max_lr=1.0), dict(base_lr=0.2, max_lr=0.1),
                dict(base_lr=0.1, max_lr=1.0, ref_batch=0),
                dict(base_lr=0.1, max_lr=1.0, warmup_fraction=2.0)):
        with pytest.raises(ValueError):
            LinearScaling(**bad)


def test_compare_with_lr_rule_target_and_accuracy(rng):
    """Each batch size trains at the rule's rate; the target and accuracy columns are
    filled; the conclusion names the fastest configuration from the rows."""
    X, y = fg.datasets.make_classification(600, 5, n_classes=3, seed=int(rng.integers(99)))
    X_val, y_val = X[:100], y[:100]
    rule = LinearScaling(base_lr=0.1, max_lr=0.8, ref_batch=16)
    table = fg.compare(fg.Linear(5, 3, "softmax"), X[100:], y[100:], modes=("sgd", "mbgd"),
                       batch_sizes=(16, 128), backends=("numpy",), epochs=2, repeats=1,
                       target_loss=5.0, trace_memory=False, lr_rule=rule, X_val=X_val,
                       y_val=y_val)
    lrs = {r["batch_size"]: r["lr"] for r in table.rows}
    assert lrs == pytest.approx({1: 0.1 / 16, 16: 0.1, 128: 0.8})
    assert table.meta["lr_rule"]["base_lr"] == 0.1
    for r in table.rows:
        assert r["epochs_to_target"] == 1 and r["time_to_target_s"] > 0
        assert 0.5 < r["val_accuracy"] <= 1 and 0.5 < r["train_accuracy"] <= 1
    columns = table.summary_columns()
    assert "val_accuracy" in columns and "train_accuracy" not in columns
    assert {"lr", "final_val_loss", "time_to_target_s", "epochs_to_target"} <= set(columns)
    line = table.conclusion()
    fastest = min(table.rows, key=lambda r: r["time_to_target_s"])
    label = f"{fastest['mode']}" + (f" b={fastest['batch_size']}" if fastest["mode"] == "mbgd"
                                    else "")
    assert line.startswith(f"fastest to loss 5: {label} on numpy, ")
    assert "reached by 3 of 3" in line and "samples/s" in line
    assert "best validation accuracy: " in line and "\n" not in line


def _row(mode, bs, **kw):
    base = dict(backend="numba-cpu", mode=mode, batch_size=bs, status="ok", train_loss=[1.0],
                final_train_loss=1.0, samples_per_s=1e3, time_to_target_s=None)
    return dict(base, **kw)


def test_conclusion_from_rows():
    """Computed from the rows: a faster configuration to the target wins; nothing reached
    says so with the lowest loss; diverged and failed rows are left out."""
    rows = [_row("sgd", 1, time_to_target_s=0.5, epochs_to_target=3, final_train_loss=0.2),
            _row("mbgd", 32, time_to_target_s=0.25, epochs_to_target=4, samples_per_s=2.5e6,
                 final_train_loss=0.1),
            _row("bgd", 900, samples_per_s=9e6, status="diverged"),
            dict(backend="numpy", mode="bgd", batch_size=900, status="failed", reason="x")]
    line = Table(rows, {"target_loss": 0.3, "epochs": 5}).conclusion()
    assert line == ("fastest to loss 0.3: mbgd b=32 on numba-cpu, 0.250 s (4 epochs; reached "
                    "by 2 of 2); highest throughput: mbgd b=32 on numba-cpu, 2.50M samples/s")
    unreached = [dict(r, time_to_target_s=None) for r in rows]
    line = Table(unreached, {"target_loss": 0.01, "epochs": 5}).conclusion()
    assert line.startswith("none reached loss 0.01 in 5 epochs (lowest: 0.1000, mbgd b=32")
    rows[0]["val_accuracy"], rows[1]["val_accuracy"] = 0.91, 0.9104
    assert Table(rows, {}).conclusion().endswith(
        "best validation accuracy: 91.0%, mbgd b=32 on numba-cpu (tied with 1 other)")
    assert Table(rows[2:], {}).conclusion() == "no configuration ran to the end"


def test_readable_cells():
    """No exponents: compile times as cached / ms / s, seconds to 3 significant digits,
    rates with k/M/G, accuracies in percent."""
    assert format_cell("compile_s", 7.61e-07) == "cached"
    assert format_cell("compile_s", 0.01234) == "12.3 ms"
    assert format_cell("compile_s", 14.27) == "14.3 s"
    assert format_cell("epoch_s", 0.0051749) == "0.00517"
    assert format_cell("time_to_target_s", 4.2e-05) == "0.0000420"
    assert format_cell("epoch_s", 0.99961) == "1.00"
    assert format_cell("samples_per_s", 1_234_567.0) == "1.23M"
    assert format_cell("steps_per_s", 25_408.0) == "25.4k"
    assert format_cell("samples_per_s", 999_999.0) == "1.00M"
    assert format_cell("steps_per_s", 31.26) == "31.3"
    assert format_cell("val_accuracy", 0.98331) == "98.3%"
    assert format_cell("final_train_loss", 1.234e-07) == "0.0000001234"
    assert format_cell("lr", 0.1) == "0.1" and format_cell("lr", 0.003125) == "0.003125"
    assert format_cell("peak_traced_bytes", 3 * 2**20) == "3.0 MiB"
    assert format_cell("batch_size", 256) == "256" and format_cell("status", "ok") == "ok"
    assert format_cell("epoch_s", None) == "" and format_cell("epoch_s", float("nan")) == "nan"
    md = Table([_row("sgd", 1, compile_s=2e-6, epoch_s=3e-5)], {}).to_markdown()
    assert "e-0" not in md and "| cached |" in md

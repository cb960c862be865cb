"""The batch-size study: the S(B) fit, the learning-rate search, steps to target by
checkpoints and bisection, and the study end to end on small problems."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

import fastgd as fg
from fastgd.batchsize import tuning
from fastgd.batchsize.scaling import CriticalBatch, fit_critical_batch, flat_step_time_limit
from fastgd.batchsize.trajectory import RESOLUTION, Trajectory, train_to_target


def blobs(n=240, d=6, k=3, seed=0, sep=2.0, n_val=0):
    """Standardised Gaussian classes (a softmax problem that reaches low loss); with
    ``n_val``, also a validation split of the same classes."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, k, n + n_val)
    centres = rng.standard_normal((k, d)) * sep
    X = centres[y] + rng.standard_normal((n + n_val, d))
    X = ((X - X.mean(0)) / X.std(0)).astype(np.float32)
    if n_val:
        return X[:n], y[:n], X[n:], y[n:]
    return X, y


# ----------------------------------------------------------------------------- the fit
@pytest.mark.parametrize(("s_min", "e_min"), [(10.0, 1000.0), (3.0, 50.0), (200.0, 2e5)])
def test_fit_recovers_the_tradeoff(s_min, e_min):
    """Exact S(B) = S_min + E_min / B gives back S_min, E_min, B_crit and r2 = 1."""
    b = np.array([1, 4, 16, 64, 256, 1024])
    fit = fit_critical_batch(b, s_min + e_min / b, b_simple=7.0)
    assert fit.s_min == pytest.approx(s_min, rel=1e-6)
    assert fit.e_min == pytest.approx(e_min, rel=1e-6)
    assert fit.b_crit == pytest.approx(e_min / s_min, rel=1e-6)
    assert fit.r2 == pytest.approx(1.0, abs=1e-9) and fit.points == 6 and fit.b_simple == 7.0


def test_fit_with_noise_and_with_too_few_points():
    """Noisy steps fit to a few percent with r2 below 1; fewer than three reached batch
    sizes give no fit and a reason."""
    rng = np.random.default_rng(1)
    b = np.array([2, 8, 32, 128, 512])
    s = (20 + 4000 / b) * np.exp(rng.normal(0, 0.03, b.size))
    fit = fit_critical_batch(b, s)
    assert fit.b_crit == pytest.approx(200, rel=0.15) and 0.95 < fit.r2 < 1
    none = fit_critical_batch([4, 8, 16], [10, None, 0])
    assert none.s_min is None and none.steps(8) is None and "1 batch size" in none.reason


def test_regimes_and_flat_step_time():
    """Perfect scaling well below B_crit, maximal data parallelism well above; the step
    time is flat up to the last batch within 1.3x of the smallest's."""
    c = CriticalBatch(10.0, 1000.0, 100.0, 1.0, 5)
    assert [c.regime(b) for b in (8, 100, 1000)] == [
        "perfect scaling", "diminishing returns", "maximal data parallelism"]
    assert flat_step_time_limit([1, 4, 16, 64], [1e-5, 1.1e-5, 1.25e-5, 5e-5]) == 16
    assert flat_step_time_limit([1], [1e-5]) is None


# ----------------------------------------------------------------------------- the search
class FakeRuns:
    """``try_lr`` of a made-up problem: steps to target as a function of the rate."""

    def __init__(self, steps_of):
        self.steps_of, self.calls = steps_of, []

    def __call__(self, lr, cap):
        self.calls.append(lr)
        steps = self.steps_of(lr)
        if steps == "diverged":
            return Trajectory("diverged", best_loss=math.inf)
        if cap is not None and steps >= cap:
            return Trajectory("pruned", best_loss=1.0)
        return Trajectory("ok", steps=steps, seconds=steps * 1e-3, best_loss=0.1)


@pytest.mark.parametrize(("steps_of", "guess", "first", "want"), [
    (lambda lr: round(100 * abs(math.log2(lr / 0.4))) + 10, 0.1, True, 0.4),   # inside
    (lambda lr: round(100 * abs(math.log2(lr / 3.2))) + 10, 0.1, False, 0.8),  # edge, +2
    (lambda lr: "diverged" if lr > 0.15 else round(10 / lr), 0.1, True, 0.1),  # stability cap
])
def test_search_finds_the_fewest_steps(steps_of, guess, first, want):
    """The winner takes the fewest steps; an edge winner extends the grid (at most
    MAX_EXTENSIONS times); nothing above a diverged rate is tried."""
    runs = FakeRuns(steps_of)
    best, attempts, traj = tuning.search(guess, first, runs)
    assert best == pytest.approx(want)
    assert traj.status == "ok" and len(attempts) == len(runs.calls)
    diverged = [a["lr"] for a in attempts if a["status"] == "diverged"]
    if diverged:
        assert all(lr <= min(diverged) for lr in runs.calls)


def test_search_extends_past_a_skipped_edge_and_below_all_diverged():
    """The guess diverges and the rate below it wins: the grid still moves one factor
    further down (the rate above the diverged one is skipped, not tried); when every rate
    diverges, lower ones are tried."""
    runs = FakeRuns(lambda lr: "diverged" if lr >= 0.1 else round(10 / lr))
    best, _, _ = tuning.search(0.1, False, runs)
    assert best == pytest.approx(0.05) and runs.calls == pytest.approx([0.1, 0.05, 0.025])
    runs = FakeRuns(lambda lr: "diverged" if lr > 0.02 else 5)
    best, _, _ = tuning.search(0.1, False, runs)
    assert best == pytest.approx(0.0125) and min(runs.calls) == pytest.approx(0.0125)


def test_scaled_guess_is_linear_for_sgd_and_sqrt_for_adaptive():
    """SGD scales the rate with the batch; Adam & co. with its square root."""
    assert tuning.scaled_guess(0.1, 16, 64, "sgd") == pytest.approx(0.4)
    assert tuning.scaled_guess(0.1, 16, 64, "adam") == pytest.approx(0.2)


# ----------------------------------------------------------------------------- to target
def _losses_every_step(model, X, y, steps, **kw):
    run = fg.prepare(model, X, y, epochs=1000, backend="numpy", dtype="float64", **kw)
    out, per_epoch = [run.engine.train_loss()], run.steps_per_epoch
    for s in range(steps):
        epoch, start = divmod(s, per_epoch)
        lrs = run.schedule.rates(run.lr, epoch, run.epochs, epoch * per_epoch, per_epoch)
        run.engine.run_epoch(epoch, lrs, start, start + 1)
        out.append(run.engine.train_loss())
    return out


@pytest.mark.parametrize("mode_kw", [dict(mode="bgd"), dict(mode="mbgd", batch_size=16)])
def test_steps_to_target_within_resolution_of_the_first_crossing(mode_kw):
    """The count is at or after the first step whose exact loss is at the target, by at
    most RESOLUTION of it (BGD descends monotonically: exactly the first crossing's
    bracket); the loss there is at or below the target and the time is measured."""
    X, y = blobs()
    model = fg.Linear(6, 3, loss="softmax")
    kw = dict(lr=0.05, **mode_kw)
    losses = _losses_every_step(model, X, y, 400, **kw)
    target = losses[0] - 0.8 * (losses[0] - min(losses))
    first = next(s for s, v in enumerate(losses) if v <= target)
    run = fg.prepare(model, X, y, epochs=1000, backend="numpy", dtype="float64", **kw)
    traj = train_to_target(run, target, 400, run.engine.train_loss)
    assert traj.status == "ok" and traj.loss <= target
    assert first <= traj.steps <= first + max(1, RESOLUTION * traj.steps)
    assert losses[traj.steps] == pytest.approx(traj.loss, rel=1e-12)
    assert traj.seconds > 0 and traj.step_s > 0
    if mode_kw["mode"] == "bgd":
        assert traj.steps - 1 <= first * (1 + RESOLUTION) and traj.steps >= first


def test_trajectory_statuses():
    """Not reached within the budget (best loss kept), pruned at a step cap, diverged."""
    X, y = blobs()
    model = fg.Linear(6, 3, loss="softmax")
    run = fg.prepare(model, X, y, mode="bgd", epochs=50, lr=0.01, backend="numpy")
    slow = train_to_target(run, 1e-6, 20, run.engine.train_loss)
    assert slow.status == "not reached" and slow.best_loss < slow.curve[0][2]
    run = fg.prepare(model, X, y, mode="bgd", epochs=50, lr=0.01, backend="numpy")
    assert train_to_target(run, 1e-6, 50, run.engine.train_loss, 10).status == "pruned"
    run = fg.prepare(model, X * 1e3, y, mode="bgd", epochs=50, lr=1e3, backend="numpy")
    assert train_to_target(run, 1e-6, 50, run.engine.train_loss).status == "diverged"


# ----------------------------------------------------------------------------- the study
@pytest.fixture(scope="module")
def study():
    """A small study on numba-cpu (linear softmax, plain SGD: drivers other tests compile)."""
    X, y, Xv, yv = blobs(n=400, n_val=100)
    return fg.batch_size_study(fg.Linear(6, 3, loss="softmax"), X, y, target_loss=0.25,
                               batch_sizes=(2, 8, 32, 128, 400), X_val=Xv, y_val=yv,
                               max_epochs=20, sharpness_rows=64)


def test_study_rows_fit_and_recommendation(study):
    """Every batch size reached the target with its tuned rate, the measures at the target
    are there, the recommendation is the fastest measured, the fit is consistent."""
    assert [r["batch_size"] for r in study.rows] == [2, 8, 32, 128, 400]
    for r in study.rows:
        assert r["status"] == "ok", r
        assert r["loss_at_target"] <= 0.25 and r["train_loss"] <= 0.25
        assert r["examples_to_target"] >= r["steps_to_target"]
        assert 0 < r["train_accuracy"] <= 1 and 0 < r["val_accuracy"] <= 1
        assert r["generalization_gap"] == pytest.approx(r["train_accuracy"]
                                                        - r["val_accuracy"])
        assert r["b_simple"] > 0 and r["sharpness"] > 0 and r["lrs_tried"]
        assert r["regime"] in ("perfect scaling", "diminishing returns",
                               "maximal data parallelism")
    fastest = min(study.rows, key=lambda r: r["seconds_to_target"])
    assert study.recommended_batch_size == fastest["batch_size"]
    c = study.critical
    assert c.points == 5 and c.s_min > 0 and c.b_crit == pytest.approx(c.e_min / c.s_min)
    assert c.b_simple == pytest.approx(np.median([r["b_simple"] for r in study.rows]))
    steps = [r["steps_to_target"] for r in study.rows]
    assert steps == sorted(steps, reverse=True)  # bigger batches never need more steps here
    best = next(r for r in study.rows if r["batch_size"] == study.recommended_batch_size)
    curve = study.noise_curve
    assert curve[0]["step"] == 0 and curve[-1]["step"] == best["steps_to_target"]
    assert curve[-1]["b_simple"] == pytest.approx(best["b_simple"], rel=1e-9)
    assert any(str(study.recommended_batch_size) in s for s in study.explanation)


def test_study_reports(study, tmp_path):
    """Markdown table and sentences, JSON round trip, the figure."""
    md = study.to_markdown()
    assert "| batch | lr | status |" in md and "B_crit" in md
    data = json.loads(study.to_json(tmp_path / "s.json").read_text())
    assert data["recommended_batch_size"] == study.recommended_batch_size
    assert data["critical"]["b_crit"] == pytest.approx(study.critical.b_crit)
    assert fg.BatchSizeStudy.from_dict(data).to_markdown() == md
    png = study.plot(tmp_path / "s.png")
    assert png.stat().st_size > 10_000


def test_unreachable_target_rows_say_why():
    """A target nothing reaches: rows 'not reached' with the best loss, no recommendation,
    an explanation that says so."""
    X, y = blobs(n=200)
    s = fg.batch_size_study(fg.Linear(6, 3, loss="softmax"), X, y, target_loss=1e-4,
                            batch_sizes=(50, 200), lr=0.1, max_epochs=2, sharpness_rows=0)
    assert [r["status"] for r in s.rows] == ["not reached", "not reached"]
    assert "lowest loss" in s.rows[0]["reason"] and s.recommended_batch_size is None
    assert "No batch size reached" in s.explanation[0] and s.critical.s_min is None
    assert "No fit" in s.to_markdown()


def test_study_settings_and_errors():
    """A callable lr is used as given; a momentum tuple runs the study per value; bad
    settings are clear errors before any training."""
    X, y = blobs(n=200)
    model = fg.Linear(6, 3, loss="softmax")
    seen = []
    group = fg.batch_size_study(model, X, y, target_loss=0.4, batch_sizes=(20, 100),
                                lr=lambda b: 0.01 * b, momentum=(0.0, 0.9), max_epochs=20,
                                sharpness_rows=0, progress=lambda b, lr, t: seen.append(lr))
    assert [s.momentum for s in group.studies] == [0.0, 0.9]
    assert sorted(set(seen)) == [0.2, 1.0]
    assert "momentum 0.9" in group.to_markdown()
    for kw, match in [(dict(target_loss=0), "target_loss"),
                      (dict(target_loss=-1), "target_loss"),
                      (dict(batch_sizes=(500,)), "exceed"),
                      (dict(memory_budget=10), "memory_budget"),
                      (dict(optimizer=fg.Adam(), momentum=0.9), "momentum applies to SGD"),
                      (dict(lr="fast"), "lr must be"),
                      (dict(target_on="val"), "needs X_val"),
                      (dict(target_loss=50.0), "already have loss")]:
        with pytest.raises(ValueError, match=match):
            fg.batch_size_study(model, X, y, **{"target_loss": 0.4, **kw})


def test_memory_budget_leaves_out_what_does_not_fit():
    """A budget between the smallest and the largest batch's needs: the large one is a row
    'over budget' with the sizes, the others run."""
    X, y = blobs(n=200)
    model = fg.MLP([6, 32, 3])
    from fastgd.batchsize.study import _Problem

    p = _Problem(model, X, y, None, None, 0.5, "numpy", "float32", 5, 0, None)
    small, big = p.memory(4, fg.SGD()), p.memory(200, fg.SGD())
    assert small < big
    s = fg.batch_size_study(model, X, y, target_loss=0.5, batch_sizes=(4, 200), lr=0.05,
                            backend="numpy", max_epochs=2, memory_budget=(small + big) // 2,
                            sharpness_rows=0)
    assert s.rows[1]["status"] == "over budget" and "MiB" in s.rows[1]["reason"]
    assert s.rows[0]["status"] in ("ok", "not reached")

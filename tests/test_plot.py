"""fastgd.plot.plot_table: one PNG of four panels, also for failed or empty studies."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

import fastgd as fg
from fastgd.compare import Table, compare
from fastgd.plot import PLOT_HINT, plot_table

pytest.importorskip("matplotlib")

META = {"study": "compare", "model": "linear 8-1 mse", "n": 600, "d": 8, "dtype": "float32",
        "machine": "x86_64, cpu", "date": "2026-01-01 00:00"}


def check_png(path, min_bytes: int = 5_000) -> np.ndarray:
    """The file is a real PNG of a few KB whose pixels are not all the same; its pixels."""
    import matplotlib.image as mpimg

    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    assert len(data) > min_bytes
    pixels = mpimg.imread(path)
    assert pixels.ndim == 3 and min(pixels.shape[:2]) > 100
    assert float(np.var(pixels[..., :3])) > 1e-4
    return pixels


def ran_row(backend, mode, batch_size, scale=1.0, status="ok", losses=(1.0, 0.5, 0.25)):
    """A measured row as ``fastgd.compare.measure`` makes it."""
    sps = 1e6 * scale * (1 + np.log2(batch_size))
    return dict(
        backend=backend, mode=mode, batch_size=batch_size, status=status, reason="",
        samples_per_s=sps, samples_per_s_min=0.9 * sps, samples_per_s_max=1.1 * sps,
        steps_per_s=sps / batch_size, epoch_s=600 / sps, step_s=batch_size / sps,
        compile_s=0.01, peak_traced_bytes=1e5 * (1 + batch_size / 64) * scale,
        peak_rss_bytes=None, estimate_bytes=1.1e5 * (1 + batch_size / 64) * scale,
        final_train_loss=losses[-1], train_loss=list(losses), val_loss=[None] * len(losses),
        elapsed_s=[600 / sps * (i + 1) for i in range(len(losses))],
        samples_seen=[600 * (i + 1) for i in range(len(losses))],
        time_to_target_s=None, epochs_to_target=None)


def not_run_row(backend, mode, batch_size, status, reason):
    return dict(backend=backend, mode=mode, batch_size=batch_size, status=status, reason=reason)


def test_four_panels_from_measured_rows(tmp_path):
    rows = [ran_row(b, m, bs, scale) for b, scale in (("numpy", 0.1), ("numba-cpu", 1.0))
            for m, bs in (("bgd", 600), ("sgd", 1), ("mbgd", 32), ("mbgd", 256))]
    path = tmp_path / "study.png"
    assert plot_table(Table(rows, dict(META)), path) == str(path)
    pixels = check_png(path)
    assert pixels.shape[1] > pixels.shape[0]  # a landscape page of four panels


def test_failed_and_diverged_rows_are_handled(tmp_path):
    rows = [
        ran_row("numpy", "mbgd", 32),
        ran_row("numpy", "sgd", 1, status="diverged", losses=(2.0, float("nan"))),
        ran_row("numpy", "bgd", 600, losses=(float("inf"),)),
        not_run_row("numpy", "mbgd", 4096, "skipped", "batch_size 4096 > n = 600"),
        not_run_row("cuda", "mbgd", 32, "unavailable", "no GPU"),
        not_run_row("numba-cpu", "mbgd", 32, "failed", "RuntimeError: boom"),
        not_run_row("numba-cpu", "mbgd", 256, "out of memory", "MemoryError"),
    ]
    rows[0]["peak_traced_bytes"] = None  # trace_memory=False: the estimate alone is drawn
    plot_table(Table(rows, dict(META)), tmp_path / "mixed.png")
    check_png(tmp_path / "mixed.png")


def test_negative_losses_and_missing_meta(tmp_path):
    """Losses that are not all positive stay on a linear axis; no meta still has a title."""
    rows = [ran_row("numpy", "mbgd", 32, losses=(1.0, -0.5, -1.0)),
            ran_row("numpy", "mbgd", 64, losses=(0.0, 0.0))]
    plot_table(Table(rows), tmp_path / "neg.png")
    check_png(tmp_path / "neg.png")


@pytest.mark.parametrize("rows", [
    [not_run_row("numpy", "mbgd", 4096, "skipped", "batch_size 4096 > n = 600"),
     not_run_row("numba-cpu", "sgd", 1, "failed", "ValueError: bad")],
    [],
], ids=["nothing-ran", "no-rows"])
def test_nothing_ran_still_writes_a_png_with_a_note(rows, tmp_path):
    path = tmp_path / "empty.png"
    plot_table(Table(rows, dict(META)), path)
    check_png(path, min_bytes=2_000)


def test_real_study_and_table_plot(tmp_path, rng):
    X = rng.standard_normal((300, 4)).astype(np.float32)
    y = X @ np.ones(4, np.float32)
    table = compare(fg.Linear(4), X, y, modes=("bgd", "mbgd"), batch_sizes=(16, 1000),
                    backends=("numpy",), epochs=2, lr=0.1, repeats=1)
    assert [r["status"] for r in table.rows] == ["ok", "ok", "skipped"]
    path = table.plot(tmp_path / "real.png")
    check_png(tmp_path / "real.png")
    assert path == str(tmp_path / "real.png")


def test_missing_matplotlib_raises_with_install_hint(tmp_path, monkeypatch):
    for name in [m for m in sys.modules if m == "matplotlib" or m.startswith("matplotlib.")]:
        monkeypatch.setitem(sys.modules, name, None)
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    with pytest.raises(ImportError, match=r'pip install "fastgd\[plot\]"'):
        plot_table(Table([ran_row("numpy", "sgd", 1)]), tmp_path / "x.png")
    assert PLOT_HINT == 'pip install "fastgd[plot]"'
    assert not (tmp_path / "x.png").exists()


def test_pyplot_is_never_imported(tmp_path):
    """Drawing goes through Figure + FigureCanvasAgg: no pyplot, no global backend switch."""
    code = (
        "import sys\n"
        "from fastgd.compare import Table\n"
        "from fastgd.plot import plot_table\n"
        f"plot_table(Table([]), {str(tmp_path / 'p.png')!r})\n"
        "print('matplotlib.pyplot' in sys.modules)\n"
    )
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stderr
    assert p.stdout.strip() == "False"

"""The ``fastgd`` command, run as ``python -m fastgd`` in a subprocess on tiny problems."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

import fastgd
from fastgd import cli

SMALL = ["--data", "regression:600x8", "--epochs", "2", "--repeats", "1"]


def run(*args, cwd=None, timeout=120) -> subprocess.CompletedProcess:
    """``python -m fastgd ARGS`` -> CompletedProcess (text)."""
    return subprocess.run([sys.executable, "-m", "fastgd", *map(str, args)], cwd=cwd,
                          capture_output=True, text=True, timeout=timeout)


def assert_one_error_line(p: subprocess.CompletedProcess, status: int = 2) -> str:
    assert p.returncode == status, (p.returncode, p.stdout, p.stderr)
    assert "Traceback" not in p.stderr
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1 and "error" in lines[0], p.stderr
    assert lines[0].startswith("fastgd: error: ")
    return lines[0]


def check_png(path) -> None:
    """A real PNG of a few KB whose pixels are not all the same."""
    import matplotlib.image as mpimg

    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    assert len(data) > 5_000
    pixels = mpimg.imread(path)
    assert pixels.ndim == 3 and pixels.shape[0] > 100 and pixels.shape[1] > 100
    assert float(np.var(pixels[..., :3])) > 1e-4


def test_compare_writes_md_json_csv_png(tmp_path):
    pytest.importorskip("matplotlib")
    out = tmp_path / "out"
    p = run("compare", *SMALL, "--out", out)
    assert p.returncode == 0, p.stderr
    assert "Traceback" not in p.stderr
    stem = "regression-600x8-linear"
    for ext in ("md", "json", "csv", "png"):
        assert (out / f"{stem}.{ext}").is_file(), ext
    # stdout: the Markdown table and the folder
    assert "| backend | mode | batch_size | status | lr |" in p.stdout
    assert str(out) in p.stdout
    conclusion = [line for line in p.stdout.splitlines() if line.startswith("conclusion: ")]
    assert len(conclusion) == 1 and "highest throughput: " in conclusion[0]
    assert "e-0" not in p.stdout  # readable numbers, no exponents
    table = json.loads((out / f"{stem}.json").read_text())
    rows = table["rows"]
    assert {r["backend"] for r in rows} == set(fastgd.backends.available())
    # 3 modes x (32, 256, 4096): 4096 > n is a skipped row, never an error
    assert {(r["mode"], r["batch_size"]) for r in rows} >= {("bgd", 600), ("sgd", 1),
                                                            ("mbgd", 32), ("mbgd", 256)}
    status = {(r["backend"], r["mode"], r["batch_size"]): r["status"] for r in rows}
    assert all(s == "skipped" for k, s in status.items() if k[2] == 4096)
    assert all(s == "ok" for k, s in status.items() if k[2] != 4096)
    assert table["meta"]["data"] == "regression:600x8" and table["meta"]["n"] == 600
    md = (out / f"{stem}.md").read_text()
    assert md.startswith(f"# {stem}") and "| backend |" in md and f"{stem}.png" in md
    assert f"Conclusion: {conclusion[0].removeprefix('conclusion: ')}" in md
    assert table["meta"]["conclusion"] == conclusion[0].removeprefix("conclusion: ")
    assert (out / f"{stem}.csv").read_text().startswith("backend,")
    check_png(out / f"{stem}.png")


def test_json_prints_only_the_table(tmp_path):
    out = tmp_path / "out"
    p = run("compare", *SMALL, "--modes", "bgd,mbgd", "--batch-sizes", "64",
            "--backends", "numpy", "--json", "--no-plot", "--quiet", "--out", out)
    assert p.returncode == 0, p.stderr
    table = json.loads(p.stdout)  # nothing else on stdout
    assert [(r["mode"], r["batch_size"]) for r in table["rows"]] == [("bgd", 600), ("mbgd", 64)]
    assert all(r["status"] == "ok" and r["samples_per_s"] > 0 for r in table["rows"])
    assert not list(out.glob("*.png"))  # --no-plot
    assert (out / "regression-600x8-linear.json").is_file()


def test_no_command_runs_compare_and_demo_is_an_alias(tmp_path):
    for first in ([], ["demo"]):
        out = tmp_path / ("demo" if first else "plain")
        p = run(*first, *SMALL, "--modes", "bgd", "--backends", "numpy", "--no-plot",
                "--json", "--out", out)
        assert p.returncode == 0, p.stderr
        assert json.loads(p.stdout)["meta"]["study"] == "compare"


def test_model_option_mlp_with_suffixes(tmp_path):
    p = run("compare", "--data", "classification:400x6x3", "--model", "mlp:6-16-3:tanh",
            "--modes", "mbgd", "--batch-sizes", "32", "--backends", "numpy", "--epochs", "2",
            "--repeats", "1", "--lr", "0.1", "--momentum", "0.9", "--nesterov", "--json",
            "--no-plot", "--out", tmp_path)
    assert p.returncode == 0, p.stderr
    table = json.loads(p.stdout)
    assert table["meta"]["model"] == "mlp(tanh) 6-16-3 softmax"
    opt = table["meta"]["optimizer"]
    assert opt["name"] == "SGD" and opt["momentum"] == 0.9 and opt["nesterov"] is True
    assert opt["lr"] == 0.1 and table["rows"][0]["status"] == "ok"


def test_optimizer_option_with_settings(tmp_path):
    """--optimizer takes torch.optim settings; --lr and --weight-decay fill in its fields;
    a non-SGD optimizer without --lr keeps its own default rate."""
    p = run("fit", "--data", "regression:300x4", "--epochs", "1", "--json", "--optimizer",
            "adam(betas=(0.8, 0.99), amsgrad=True)", "--weight-decay", "0.01")
    assert p.returncode == 0, p.stderr
    opt = json.loads(p.stdout)["optimizer"]
    assert opt == dict(name="Adam", lr=1e-3, betas=[0.8, 0.99], eps=1e-8, weight_decay=0.01,
                       amsgrad=True)
    p = run("compare", *SMALL, "--optimizer", "rmsprop", "--lr", "0.01", "--momentum", "0.5",
            "--json", "--no-plot", "--quiet", "--out", tmp_path)
    assert p.returncode == 0, p.stderr
    assert json.loads(p.stdout)["meta"]["optimizer"]["momentum"] == 0.5


def test_sweep_max_batch(tmp_path):
    p = run("sweep", *SMALL, "--max-batch", "8", "--json", "--no-plot", "--quiet",
            "--out", tmp_path)
    assert p.returncode == 0, p.stderr
    table = json.loads(p.stdout)
    assert [r["batch_size"] for r in table["rows"]] == [1, 2, 4, 8]
    assert {r["mode"] for r in table["rows"]} == {"mbgd"}
    assert table["meta"]["study"] == "sweep_batch_size"


def test_fit_json(tmp_path):
    p = run("fit", "--data", "regression:600x8", "--epochs", "2", "--batch-size", "16",
            "--lr", "0.05", "--val-split", "0.25", "--json")
    assert p.returncode == 0, p.stderr
    res = json.loads(p.stdout)
    assert len(res["history"]) == 2 and res["samples_per_s"] > 0
    assert res["steps"] == 2 * -(-450 // 16)
    assert res["history"][-1]["val_loss"] is not None
    assert res["history"][-1]["train_loss"] < res["history"][0]["train_loss"] * 1.5


def test_fit_text_lines_and_summary():
    p = run("fit", "--data", "regression:600x8", "--epochs", "2", "--backend", "numpy",
            "--mode", "bgd", "--lr", "0.5")
    assert p.returncode == 0, p.stderr
    lines = p.stdout.splitlines()
    assert [line.split()[1] for line in lines if line.startswith("epoch")] == ["1/2", "2/2"]
    assert "samples/s" in lines[-1] and "compile" in lines[-1]


def test_fit_divergence_exits_1():
    p = run("fit", "--data", "regression:600x8", "--mode", "sgd", "--lr", "50",
            "--backend", "numpy", "--epochs", "2")
    assert p.returncode == 1, (p.stdout, p.stderr)
    assert "diverged" in p.stderr and "Traceback" not in p.stderr


def test_backends_lists_every_backend():
    p = run("backends")
    assert p.returncode == 0
    names = [line.split()[0] for line in p.stdout.splitlines()]
    assert "numpy" in names and "numba-cpu" in names
    assert "available" in p.stdout


@pytest.mark.parametrize("args", [
    ["compare", "--model", "perceptron", "--data", "regression:100x4"],
    ["compare", "--model", "mlp:5-10-1", "--data", "regression:100x4"],  # 5 != 4 features
    ["compare", "--batch-sizes", "0"],
    ["compare", "--batch-sizes", "32,x"],
    ["compare", "--epochs", "-1"],
    ["compare", "--lr", "0"],
    ["compare", "--modes", "bgd,turbo"],
    ["compare", "--backends", "tpu", "--data", "regression:100x4"],
    ["compare", "--data", "regression:12"],
    ["compare", "--data", "regression:axb"],
    ["compare", "--data", "imagenet"],
    ["compare", "--nesterov", "--data", "regression:100x4"],  # needs momentum
    ["fit", "--optimizer", "lion"],
    ["fit", "--optimizer", "adam(betas=0.9"],
    ["fit", "--optimizer", "adam(beta=0.9)"],  # no such setting
    ["fit", "--optimizer", "adam(lr=__import__('os'))"],  # literals only
    ["fit", "--optimizer", "adam", "--momentum", "0.9"],  # Adam has no momentum
    ["fit", "--optimizer", "adam(lr=0.1)", "--lr", "0.2"],  # given twice
    ["fit", "--optimizer", "adam(betas=(1.5, 0.9))"],  # out of range
    ["sweep", "--memory-budget", "lots"],
    ["sweep", "--backend", "tpu"],
    ["fit", "--mode", "sgd", "--batch-size", "8", "--data", "regression:100x4"],
    ["fit", "--data", "regression:100x4", "--model", "softmax"],  # real-valued targets
    ["fit", "--lr-schedule", "sometimes"],
    ["fit", "--seed", "-3"],
    ["fit", "--val-split", "1.5"],
    ["frobnicate"],
])
def test_bad_arguments_give_one_error_line(args, tmp_path):
    assert_one_error_line(run(*args, "--out", tmp_path) if args[0] in ("compare", "sweep")
                          else run(*args))


def test_missing_file_is_an_error(tmp_path):
    line = assert_one_error_line(run("fit", "--data", tmp_path / "nope.csv"))
    assert "nope.csv" in line
    line = assert_one_error_line(run("compare", "--data", tmp_path / "nope.npy",
                                     "--out", tmp_path))
    assert "not found" in line


def test_csv_file_with_target_column(tmp_path):
    rng = np.random.default_rng(0)
    X = rng.standard_normal((200, 3))
    y = X @ np.array([1.0, -2.0, 0.5])
    path = tmp_path / "data.csv"
    with open(path, "w") as f:
        f.write("target,a,b,c\n")
        for xi, yi in zip(X, y, strict=True):
            f.write(f"{yi},{xi[0]},{xi[1]},{xi[2]}\n")
    p = run("fit", "--data", path, "--target", "target", "--epochs", "2", "--json")
    assert p.returncode == 0, p.stderr
    assert len(json.loads(p.stdout)["history"]) == 2
    bad = run("fit", "--data", path, "--target", "nothere")
    assert "nothere" in assert_one_error_line(bad)


def test_ctrl_c_exits_130(tmp_path):
    """SIGINT during a long study: one short line, status 130, within seconds."""
    out = tmp_path / "out"
    proc = subprocess.Popen(
        [sys.executable, "-m", "fastgd", "compare", "--data", "regression:50000x16",
         "--backends", "numpy", "--modes", "sgd", "--epochs", "50", "--repeats", "1",
         "--no-plot", "--out", str(out)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 30
        while not out.exists() and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.05)  # the folder exists once the SIGINT handler is installed
        time.sleep(1.0)  # into the training
        assert proc.poll() is None, proc.communicate()
        t0 = time.monotonic()
        os.kill(proc.pid, signal.SIGINT)
        stdout, stderr = proc.communicate(timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 130, (stdout, stderr)
    assert time.monotonic() - t0 < 10
    assert "interrupted" in stderr and "Traceback" not in stderr
    assert "RuntimeWarning" not in stderr


# --------------------------------------------------------------------------- in process


def test_ctrl_c_during_a_compile_is_raised_when_it_ends():
    """SIGINT delivered while Numba compiles (as on a first fit) is raised once the compile
    is over, not inside it, where LLVM's callbacks print and drop exceptions."""
    from numba import njit
    from numba.core import event

    from fastgd.cli.interrupt import Interrupt, StudyInterrupted

    @njit
    def fresh(x):  # a new function: its first call compiles
        return x.sum() * 2.0

    class SendSigint(event.Listener):
        def on_start(self, ev):
            os.kill(os.getpid(), signal.SIGINT)  # handled inside the compile

        def on_end(self, ev):
            pass

    listener = SendSigint()
    with Interrupt() as interrupt:
        interrupt.hard = True
        event.register("numba:compile", listener)
        try:
            with pytest.raises(StudyInterrupted):
                fresh(np.ones(3))
        finally:
            event.unregister("numba:compile", listener)
    assert interrupt() and len(fresh.signatures) == 1  # the compile finished first
    assert fresh(np.ones(3)) == 6.0


def test_parse_model_and_bytes():
    assert cli.parse_model(None) is None
    assert cli.parse_model("linear") == cli.ModelSpec("linear", loss="mse")
    assert cli.parse_model("mlp:8-32-3:tanh:softmax") == cli.ModelSpec(
        "mlp", (8, 32, 3), "tanh", "softmax")
    assert cli.parse_model("mlp:softmax:sigmoid").activation == "sigmoid"
    for bad in ("mlp:8-x-3", "mlp:8-0-3", "mlp:relu:relu", "tree", "linear:relu", ""):
        with pytest.raises(ValueError):
            cli.parse_model(bad)
    assert cli.parse_bytes("512M") == 512 * 2**20
    assert cli.parse_bytes("2G") == cli.parse_bytes("2GiB") == 2 * 2**30
    assert cli.parse_bytes("1.5k") == 1536 and cli.parse_bytes("1000") == 1000
    for bad in ("lots", "-1G", "0", "2X"):
        with pytest.raises(ValueError):
            cli.parse_bytes(bad)


def test_build_model_from_data():
    X = np.zeros((10, 5), np.float32)
    y = np.arange(10) % 4
    assert cli.build_model(None, X, y, "softmax").sizes == (5, 4)
    assert cli.build_model(cli.parse_model("mlp"), X, y, "softmax").sizes == (5, 64, 4)
    m = cli.build_model(cli.parse_model("mlp:5-7-4:sigmoid"), X, y, "softmax")
    assert (m.sizes, m.activation, m.loss) == ((5, 7, 4), "sigmoid", "softmax")
    assert cli.build_model(cli.parse_model("linear"), X, np.zeros((10, 2)), "mse").sizes == (5, 2)


def test_progress_bar_draws_only_when_enabled():
    import io

    from fastgd import EpochRecord

    rec = EpochRecord(0, 0.5, None, 0.1, 10, 0.01, 0.1)
    quiet = io.StringIO()
    bar = cli.ProgressBar(stream=quiet, enabled=False, repeats=2)
    bar.start(0, 3, "numpy sgd b=1", 2)
    bar.epoch(rec)
    bar.end({})
    bar.close()
    assert quiet.getvalue() == ""
    loud = io.StringIO()
    bar = cli.ProgressBar(stream=loud, enabled=True, repeats=2)
    bar.start(1, 3, "numba-cpu mbgd b=32", 2)
    bar.epoch(rec)
    text = loud.getvalue()
    assert text.startswith("\r") and "2/3 numba-cpu mbgd b=32" in text
    assert "run 1/2" in text and "epoch 1/2" in text and "loss 0.5" in text
    bar.close()
    assert loud.getvalue().endswith("\r")
    hit = cli.ProgressBar(stream=quiet, enabled=False, interrupted=lambda: True)
    with pytest.raises(KeyboardInterrupt):
        hit.start(0, 1, "x", 1)


@pytest.mark.parametrize("sklearn", [True, False], ids=["digits", "no-sklearn"])
def test_builtin_study_pair(sklearn, tmp_path, capsys, monkeypatch):
    """No --model/--data: the linear study and the MLP study (on digits, or on synthetic
    classes with a one-line note when scikit-learn is missing). Shortened by options."""
    if sklearn:
        pytest.importorskip("sklearn")
    else:
        monkeypatch.setitem(sys.modules, "sklearn", None)
    status = cli.main(["compare", "--epochs", "1", "--repeats", "1", "--modes", "mbgd",
                       "--batch-sizes", "256", "--backends", "numpy", "--no-plot", "--json",
                       "--out", str(tmp_path)])
    captured = capsys.readouterr()
    assert status == 0, captured.err
    studies = json.loads(captured.out)["studies"]
    assert list(studies) == ["linear-regression", "mlp-digits"]
    lin, mlp = studies["linear-regression"], studies["mlp-digits"]
    # 20% held out; the linear-scaling rule from base rates at batch 32 (row: 256)
    assert lin["meta"]["model"] == "linear 32-1 mse" and lin["meta"]["n"] == 16000
    assert lin["meta"]["lr"] == 0.02 and mlp["meta"]["lr"] == 0.2
    assert lin["meta"]["lr_rule"]["max_lr"] == 0.5 and mlp["meta"]["lr_rule"]["max_lr"] == 2.0
    assert [r["lr"] for r in lin["rows"]] == [pytest.approx(0.16)]
    assert [r["lr"] for r in mlp["rows"]] == [pytest.approx(1.6)]
    assert mlp["meta"]["model"] == "mlp(relu) 64-64-10 softmax"
    assert all(r["status"] == "ok" for t in (lin, mlp) for r in t["rows"])
    for t, target in ((lin, 0.015), (mlp, 0.1)):
        assert t["meta"]["standardized"] and t["meta"]["val_split"] == 0.2
        assert t["meta"]["target_loss"] == target and t["meta"]["conclusion"]
        assert all(r["final_val_loss"] is not None for r in t["rows"])
    assert all(0 < r["val_accuracy"] <= 1 for r in mlp["rows"])
    notes = [line for line in captured.err.splitlines() if "scikit-learn" in line]
    if sklearn:
        assert mlp["meta"]["data"] == "digits" and not notes
    else:
        assert mlp["meta"]["data"] == "classification:2000x64x10"
        assert len(notes) == 1 and "note" in notes[0]
        assert "scikit-learn" in mlp["meta"]["note"]
    for name in studies:
        assert {p.suffix for p in tmp_path.glob(f"{name}.*")} == {".md", ".json", ".csv"}


def test_builtin_studies_standardize_hold_out_and_scale_lr(tmp_path, capsys, monkeypatch):
    """The built-in studies train on standardized features (training-row statistics) with
    20% held out and the linear-scaling rule; --lr sets its base rate (raising a lower
    cap), --val-split the held-out part, and another optimizer than SGD gets no rule."""
    from fastgd.compare import LinearScaling, Table

    calls = []

    def fake_compare(model, X, y, **kw):
        calls.append((X, kw))
        return Table([], {})

    monkeypatch.setattr(sys.modules["fastgd.compare"], "compare", fake_compare)
    monkeypatch.setitem(sys.modules, "sklearn", None)  # the synthetic fallback: no loading
    base = ["compare", "--no-plot", "--json", "--quiet", "--out", str(tmp_path)]
    assert cli.main(base) == 0
    (X, kw), (X_mlp, kw_mlp) = calls
    assert X.shape == (16000, 32) and kw["X_val"].shape == (4000, 32)
    np.testing.assert_allclose(X.mean(axis=0), 0, atol=1e-4)
    np.testing.assert_allclose(X.std(axis=0), 1, atol=1e-4)
    val_mean = np.abs(kw["X_val"].mean(axis=0))
    assert val_mean.max() > 1e-4  # scaled with the training rows' mean, not its own
    assert kw["lr_rule"] == LinearScaling(base_lr=0.02, max_lr=0.5)
    assert (kw["epochs"], kw["target_loss"]) == (5, 0.015)
    assert kw_mlp["lr_rule"] == LinearScaling(base_lr=0.2, max_lr=2.0)
    assert (kw_mlp["epochs"], kw_mlp["target_loss"]) == (20, 0.1)
    calls.clear()
    assert cli.main([*base, "--lr", "1.0", "--val-split", "0.1", "--epochs", "2"]) == 0
    (X, kw), (_, kw_mlp) = calls
    assert X.shape == (18000, 32) and kw["epochs"] == 2
    assert kw["lr_rule"] == LinearScaling(base_lr=1.0, max_lr=1.0)
    assert kw_mlp["lr_rule"] == LinearScaling(base_lr=1.0, max_lr=2.0)
    calls.clear()
    assert cli.main([*base, "--optimizer", "adam"]) == 0
    assert [kw["lr_rule"] for _, kw in calls] == [None, None]
    assert calls[0][1]["optimizer"].lr == 1e-3
    capsys.readouterr()


def test_batch_size_command_writes_reports(tmp_path, capsys):
    """``fastgd batch-size`` on a small study: table, one recommendation line per study,
    md/json/png written; --json prints only JSON; bad values are one error line."""
    args = ["batch-size", "--data", "classification:600x6x3", "--model", "softmax",
            "--batch-sizes", "8,64", "--max-epochs", "10", "--target-loss", "0.5",
            "--sharpness-rows", "32", "--quiet"]
    assert cli.main([*args, "--out", str(tmp_path / "a")]) == 0
    out = capsys.readouterr().out
    assert "| batch | lr | status |" in out
    assert out.count("Recommendation (study, SGD, momentum 0)") == 1
    for suffix in (".md", ".json", ".png"):
        assert (tmp_path / "a" / f"study{suffix}").exists()
    check_png(tmp_path / "a" / "study.png")
    assert cli.main([*args, "--json", "--no-plot", "--momentum", "0,0.9",
                     "--out", str(tmp_path / "b")]) == 0
    data = json.loads(capsys.readouterr().out)
    assert [s["momentum"] for s in data["study"]["studies"]] == [0.0, 0.9]
    for bad in (["--lr", "fast"], ["--target-loss", "0"], ["--target-loss", "1e3"]):
        assert_one_error_line(run(*args, *bad, "--out", tmp_path / "c"))

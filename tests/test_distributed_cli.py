"""``mpiexec -n 2 fastgd fit --distributed`` on a memory-mapped file: each rank trains on
its half of the rows and rank 0 alone reports; skips without mpi4py/mpiexec."""

import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

pytest.importorskip("mpi4py")


def test_distributed_fit_command(tmp_path):
    mpiexec = shutil.which("mpiexec", path=os.path.dirname(sys.executable)) or \
        shutil.which("mpiexec")
    if mpiexec is None:
        pytest.skip("mpiexec is not installed (pip install mpich)")
    rng = np.random.default_rng()
    X = rng.standard_normal((400, 6)).astype(np.float32)
    np.save(tmp_path / "X.npy", X)
    np.save(tmp_path / "y.npy", (X @ np.ones(6)).astype(np.float32))
    fastgd = [sys.executable, "-m", "fastgd"]
    out = subprocess.run([mpiexec, "-n", "2", *fastgd, "fit", "--data",
                          str(tmp_path / "X.npy"), "--target", str(tmp_path / "y.npy"),
                          "--distributed", "--backend", "numpy", "--epochs", "2",
                          "--batch-size", "20"],
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.count("fit linear 6-1 mse") == 1  # rank 0 reports
    assert "(200 x 6 per rank, 2 ranks)" in out.stdout
    assert "2 ranks (samples/s and steps per rank)" in out.stdout

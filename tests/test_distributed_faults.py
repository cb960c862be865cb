"""A rank that fails during data-parallel training ends the whole job in bounded time (an
``mpiexec -n 2`` job started here), never a hang; skips without mpi4py or ``mpiexec``."""

import os
import shutil
import subprocess
import sys
import textwrap
import time

import pytest

pytest.importorskip("mpi4py")

SCRIPT = textwrap.dedent("""
    import numpy as np
    from mpi4py import MPI
    import fastgd as fg

    comm = MPI.COMM_WORLD
    rank = comm.Get_rank()
    X = np.random.default_rng(0).standard_normal((64, 4))

    def schedule(epoch):
        if rank == 1 and epoch == 1:
            raise RuntimeError("rank 1 gives up at epoch 1")
        return 0.01

    fg.fit(fg.Linear(4), X, X[:, 0], batch_size=8, epochs=4, lr_schedule=schedule,
           comm=comm, backend="numpy")
    print("UNREACHABLE", flush=True)
""")


def mpiexec() -> str:
    exe = shutil.which("mpiexec", path=os.path.dirname(sys.executable)) or \
        shutil.which("mpiexec")
    if exe is None:
        pytest.skip("mpiexec is not installed (pip install mpich)")
    return exe


def test_a_failing_rank_aborts_every_rank_quickly(tmp_path):
    script = tmp_path / "fail.py"
    script.write_text(SCRIPT)
    t = time.perf_counter()
    out = subprocess.run([mpiexec(), "-n", "2", sys.executable, str(script)],
                         capture_output=True, text=True, timeout=120)
    took = time.perf_counter() - t
    assert out.returncode != 0
    assert "rank 1 of 2 failed during data-parallel training" in out.stderr, \
        (out.returncode, out.stdout[-2000:], out.stderr[-2000:])
    assert "rank 1 gives up at epoch 1" in out.stderr
    assert "UNREACHABLE" not in out.stdout
    assert took < 120

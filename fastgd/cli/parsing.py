"""The argument parser of the ``fastgd`` command: every command's options and their help."""

from __future__ import annotations

import argparse

from ..compare import MODES
from . import argtypes as t
from .defaults import DEFAULT_DATA, DEFAULT_EPOCHS, DEFAULT_LR, DEFAULT_OUT, DEFAULT_REPEATS


class _Parser(argparse.ArgumentParser):
    """argparse, with errors as one ``fastgd: error: ...`` line (exit status 2)."""

    def error(self, message):
        """Print one error line naming the command's ``--help``; exit with status 2."""
        self.exit(2, f"fastgd: error: {message} (see '{self.prog} --help')\n")


def _add_data_options(p, command: str) -> None:
    default = "the built-in study" if command == "compare" else DEFAULT_DATA
    g = p.add_argument_group("data and model")
    g.add_argument("--data", metavar="SPEC",
                   help="digits, diabetes, mnist5k, regression:NxD[xOUTPUTS], "
                        "classification:NxD[xCLASSES] or a .npy/.npz/.csv file "
                        f"(default: {default})")
    g.add_argument("--target", type=t.target_arg, metavar="COL",
                   help="target column (index or header name) of a data file, or a .npy of "
                        "targets (default: the last column, or array 'y' of a .npz)")
    g.add_argument("--model", metavar="SPEC",
                   help="linear, logistic, softmax or mlp[:SIZES][:ACTIVATION][:LOSS], e.g. "
                        "mlp:64-128-10:tanh (default: a linear model with the loss the data "
                        "suggests)")
    g.add_argument("--dtype", choices=("float32", "float64"), default="float32",
                   help="compute dtype (default: float32)")
    g.add_argument("--seed", type=t.nonnegative_int, default=0,
                   help="seed of the synthetic data, the initial parameters and the shuffle "
                        "(default: 0)")
    g.add_argument("--val-split", type=t.fraction, default=0.0, metavar="FRACTION",
                   help="hold out this fraction of the rows (seeded) for a validation loss")


def _add_train_options(p) -> None:
    g = p.add_argument_group("training")
    g.add_argument("--epochs", type=t.positive_int, default=None,
                   help=f"epochs per run (default: {DEFAULT_EPOCHS}; the built-in compare "
                        "studies: 5 linear, 20 MLP)")
    g.add_argument("--lr", type=t.positive_float, default=None,
                   help="learning rate; for the built-in compare studies the base rate at "
                        "batch 32 of lr = LR x B/32 (defaults 0.02 linear, 0.2 MLP; the cap "
                        "is raised to LR if lower); otherwise SGD's default is 0.02 on the "
                        f"default data, else {DEFAULT_LR}")
    g.add_argument("--optimizer", type=t.optimizer_spec, default=None, metavar="SPEC",
                   help="sgd (default), adam, adamw, rmsprop or adagrad with torch.optim's "
                        "defaults, or with settings: 'adam(betas=(0.9, 0.99), amsgrad=True)'; "
                        "--lr and --weight-decay set its lr and weight_decay (without --lr a "
                        "non-SGD optimizer keeps its own default lr)")
    g.add_argument("--momentum", type=t.nonnegative_float, default=None,
                   help="momentum of sgd or rmsprop, as in torch.optim (default: 0)")
    g.add_argument("--nesterov", action="store_true", help="Nesterov momentum (sgd; needs "
                   "--momentum > 0)")
    g.add_argument("--weight-decay", type=t.nonnegative_float, default=None,
                   help="weight decay of the optimizer (default: its own, 0 but AdamW's 0.01)")
    g.add_argument("--lr-schedule", choices=("constant", "step", "invscaling", "cosine"),
                   default=None, help="learning-rate schedule over epochs (default: constant)")


def _add_study_options(p, command: str) -> None:
    g = p.add_argument_group("measurement and output")
    g.add_argument("--repeats", type=t.positive_int, default=None,
                   help=f"timed runs per configuration, medians reported (default: "
                        f"{DEFAULT_REPEATS[command]})")
    g.add_argument("--target-loss", type=t.finite_float, default=None, metavar="LOSS",
                   help="report time and epochs until the training loss reaches LOSS (the "
                        "built-in compare studies: 0.015 linear, 0.1 MLP)")
    g.add_argument("--out", metavar="DIR",
                   help=f"output folder (default: {DEFAULT_OUT}/<YYYYmmdd-HHMMSS>/)")
    g.add_argument("--no-plot", action="store_true", help="do not draw the PNG")
    g.add_argument("--json", action="store_true",
                   help="print the results as JSON on stdout and nothing else there: the "
                        "table ({\"meta\", \"rows\"}), or for the built-in pair "
                        "{\"studies\": {NAME: table}}")
    g.add_argument("--quiet", action="store_true", help="no progress bars or notes on stderr")


def _add_compare(sub) -> None:
    p = sub.add_parser(
        "compare", aliases=["demo"],
        help="backends x modes x batch sizes (the default; 'demo' is an alias)",
        description="Measure every backend x mode x batch size on the same data and initial "
                    "parameters: throughput, compile time, peak memory, loss per epoch. "
                    "Without --model/--data: the built-in study (linear regression on "
                    f"{DEFAULT_DATA}; an MLP 64-64-10 on digits) with standardized features, "
                    "20% held out, a linear-scaling learning rate, epochs 5/20, repeats 2. "
                    "'demo' is an alias.")
    _add_data_options(p, "compare")
    g = p.add_argument_group("configurations")
    g.add_argument("--modes", type=t.modes, default=None,
                   help="comma-separated subset of bgd,sgd,mbgd (default: all)")
    g.add_argument("--batch-sizes", type=t.int_list, default=None, metavar="B,B,...",
                   help="MBGD batch sizes (default: 32,256,4096; the MLP study: 32,256)")
    g.add_argument("--backends", type=t.names, default=None, metavar="NAME,...",
                   help="comma-separated backends (default: every available one)")
    _add_train_options(p)
    _add_study_options(p, "compare")
    p.set_defaults(command="compare")  # also when invoked as 'demo'


def _add_sweep(sub) -> None:
    p = sub.add_parser(
        "sweep", help="MBGD at batch sizes 1, 2, 4, ... on one backend",
        description="The batch-size study: MBGD at batch sizes 1, 2, 4, ... up to n, "
                    "--max-batch, or the largest batch whose estimated memory fits "
                    f"--memory-budget. Default data: {DEFAULT_DATA}.")
    _add_data_options(p, "sweep")
    g = p.add_argument_group("configurations")
    g.add_argument("--backend", default=None,
                   help="backend to sweep (default: numba-cpu when available, else numpy)")
    g.add_argument("--max-batch", type=t.positive_int, default=None, metavar="B",
                   help="largest batch size (default: n)")
    g.add_argument("--memory-budget", type=t.bytes_arg, default=None, metavar="SIZE",
                   help="stop at the largest batch whose estimated memory fits, e.g. 512M, "
                        "2G (K/M/G are powers of 1024)")
    _add_train_options(p)
    _add_study_options(p, "sweep")


def _add_fit(sub) -> None:
    p = sub.add_parser(
        "fit", help="one training run: loss per epoch and throughput",
        description="Train once and print one line per epoch (train loss, validation loss, "
                    f"seconds) and a summary. Default data: {DEFAULT_DATA}.")
    _add_data_options(p, "fit")
    g = p.add_argument_group("run")
    g.add_argument("--mode", choices=MODES, default="mbgd", help="default: mbgd")
    g.add_argument("--batch-size", type=t.positive_int, default=None, metavar="B",
                   help="MBGD batch size (default: 32)")
    g.add_argument("--backend", default=None,
                   help="backend (default: numba-cpu when available, else numpy)")
    g.add_argument("--distributed", action="store_true",
                   help="data-parallel over the MPI ranks of `mpiexec -n P fastgd fit ...`: "
                        "each rank trains on its share of the rows (a .npy file is "
                        "memory-mapped, so a rank reads only its rows), --batch-size is "
                        "per rank, rank 0 prints the report (needs the mpi extra)")
    g.add_argument("--sync-every", type=t.positive_int, default=None, metavar="K",
                   help="with --distributed: local SGD, averaging the ranks' parameters "
                        "every K steps instead of their gradients every step")
    _add_train_options(p)
    g = p.add_argument_group("output")
    g.add_argument("--json", action="store_true",
                   help="print FitResult.to_dict() as JSON and nothing else on stdout")
    g.add_argument("--quiet", action="store_true", help="print the summary only")


def _add_batch_size(sub) -> None:
    p = sub.add_parser(
        "batch-size", help="which batch size reaches a target loss fastest, and why",
        description="The batch-size study: per batch size a tuned learning rate, steps and "
                    "measured seconds to the target loss, the gradient noise scale, "
                    "accuracy gap and sharpness there; the fitted S(B) = S_min (1 + B_crit "
                    "/ B) and a recommendation. Without --data/--model: an MLP on MNIST-5k "
                    "and a synthetic logistic problem (features standardised, 20% held "
                    "out for validation).")
    _add_data_options(p, "batch-size")
    g = p.add_argument_group("study")
    g.add_argument("--target-loss", type=t.positive_float, default=None, metavar="LOSS",
                   help="the loss to reach (default: the built-in study's, else 0.3)")
    g.add_argument("--target-on", choices=("train", "val"), default="train",
                   help="judge the target on the training or the validation loss")
    g.add_argument("--batch-sizes", type=t.int_list, default=None, metavar="B,B,...",
                   help="batch sizes (default: the built-in study's, else powers of 2 to n)")
    g.add_argument("--backend", default=None, help="backend (default: numba-cpu)")
    g.add_argument("--lr", default=None, metavar="LR",
                   help="'tune' (default: a short search per batch size) or a fixed rate")
    g.add_argument("--optimizer", type=t.optimizer_spec, default=None, metavar="SPEC",
                   help="sgd (default), adam, ... as for compare; its lr centres the search")
    g.add_argument("--momentum", type=t.float_list, default=None, metavar="M,M,...",
                   help="SGD momentum; several values run the study once each (e.g. 0,0.9)")
    g.add_argument("--max-epochs", type=t.positive_int, default=None,
                   help="epochs a run may take to reach the target (default: 50)")
    g.add_argument("--memory-budget", type=t.bytes_arg, default=None, metavar="SIZE",
                   help="leave out batch sizes whose estimated memory exceeds SIZE")
    g.add_argument("--sharpness-rows", type=t.nonnegative_int, default=1024, metavar="N",
                   help="rows the sharpness is computed on (0: skip it)")
    g = p.add_argument_group("output")
    g.add_argument("--out", metavar="DIR", help="output folder (default: a new dated one)")
    g.add_argument("--no-plot", action="store_true", help="do not draw the PNG")
    g.add_argument("--json", action="store_true", help="print the studies as JSON only")
    g.add_argument("--quiet", action="store_true", help="no progress on stderr")
    p.set_defaults(command="batch-size", val_split=None)  # None: hold out 20%


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``fastgd`` command (all subcommands); ``args.command``
    names the command (``compare`` for its alias ``demo`` too)."""
    from .. import __version__

    parser = _Parser(
        prog="fastgd",
        description="Measure batch, stochastic and mini-batch gradient descent across "
                    "backends. With no command, runs 'compare' (the built-in study).",
        epilog="Run 'fastgd COMMAND --help' for a command's options.")
    parser.add_argument("--version", action="version", version=f"fastgd {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    _add_compare(sub)
    _add_sweep(sub)
    _add_fit(sub)
    _add_batch_size(sub)
    sub.add_parser("backends", help="list backends and why any is unavailable",
                   description="List every backend: available, or why not.")
    return parser

"""From options to a training run's inputs: the data, the model, the validation rows and
the optimizer's keyword arguments (shared by ``fit`` and the studies)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .modelspec import ModelSpec, build_model


def load_data(spec: str, target=None, seed: int = 0, dtype: str = "float32"):
    """``(X, y, suggested_loss)`` for a ``--data`` spec (see ``fastgd.datasets.from_spec``);
    ``target`` picks the target column (name or index) or ``.npy`` file of a data file."""
    from .. import datasets

    if target is None:
        return datasets.from_spec(spec, seed=seed, dtype=dtype)
    if Path(spec).suffix.lower() not in (".npy", ".npz", ".csv") and not Path(spec).exists():
        raise ValueError(f"--target applies to data files (.npy/.npz/.csv); got --data {spec!r}")
    X, y = datasets.load(spec, target=target)
    return X, y, datasets.guess_loss(y)


def split_validation(X, y, fraction: float, seed: int):
    """Hold out a seeded random ``fraction`` of the rows: ``(X, y, X_val, y_val)``."""
    if not fraction:
        return X, y, None, None
    n = len(X)
    n_val = int(round(n * fraction))
    if not 1 <= n_val < n:
        raise ValueError(f"--val-split {fraction} leaves no rows for training or validation "
                         f"with {n} rows")
    perm = np.random.default_rng(seed).permutation(n)
    tr, va = np.sort(perm[n_val:]), np.sort(perm[:n_val])
    y = np.asarray(y)
    return X[tr], y[tr], X[va], y[va]


def fit_kwargs(args) -> dict:
    """The schedule option (``--lr-schedule``) as keyword arguments of
    :func:`fastgd.prepare` (the optimizer comes from :func:`build_optimizer`)."""
    return {} if args.lr_schedule is None else {"lr_schedule": args.lr_schedule}


def build_optimizer(args, default_lr: float):
    """The optimizer of ``--optimizer``/``--lr``/``--momentum``/``--nesterov``/
    ``--weight-decay``; SGD (the default) takes ``--lr`` or ``default_lr`` (the study's
    rate), another optimizer ``--lr`` or its own default. Raises ``ValueError`` naming the
    option for settings the optimizer does not have or values out of range."""
    from ..optim import OPTIMIZERS

    name, settings = args.optimizer or ("sgd", {})
    settings = dict(settings)
    cls = OPTIMIZERS[name]
    options = {"lr": args.lr if args.lr is not None or name != "sgd" else default_lr,
               "momentum": args.momentum, "nesterov": args.nesterov or None,
               "weight_decay": args.weight_decay}
    fields = set(cls.__dataclass_fields__)
    for key, value in options.items():
        if value is None:
            continue
        flag = f"--{key.replace('_', '-')}"
        if key not in fields:
            raise ValueError(f"{flag} does not apply to --optimizer {name} (its settings: "
                             f"{', '.join(sorted(fields))})")
        if key in settings:
            raise ValueError(f"{key} is given twice: in --optimizer and as {flag}")
        settings[key] = value
    unknown = set(settings) - fields
    if unknown:
        raise ValueError(f"--optimizer {name} has no setting {', '.join(sorted(unknown))} "
                         f"(its settings: {', '.join(sorted(fields))})")
    return cls(**settings)


def describe_optimizer(opt, lr_rule=None) -> str:
    """``Adam(lr=0.001, betas=(0.9, 0.999), ...)``: the optimizer and every setting; with
    ``lr_rule`` (a :class:`fastgd.compare.LinearScaling`) its ``lr`` is the rule's."""
    fields = ", ".join(f"{k}={v!r}" for k, v in opt.to_dict().items()
                       if k != "name" and not (lr_rule is not None and k == "lr"))
    if lr_rule is not None:
        return f"{opt.name}({fields}), {describe_lr_rule(lr_rule)}"
    return f"{opt.name}({fields})"


def describe_lr_rule(rule) -> str:
    """``lr = 0.1 x B/32, at most 0.5, warm-up ...``: the linear-scaling rule in words."""
    warmup = (f", warmed up from {rule.base_lr:g} over the first "
              f"{rule.warmup_fraction:.0%} of the steps when scaled up"
              if rule.warmup_fraction else "")
    return f"lr = {rule.base_lr:g} x B/{rule.ref_batch}, at most {rule.max_lr:g}{warmup}"


def training_set(spec: ModelSpec | None, X, y, loss: str, args, fit_kw: dict,
                 val_split: float | None = None):
    """``(model, X, y, kw)``: the model of ``spec`` on the data, the training rows left by
    holding out ``val_split`` (default ``--val-split``), and ``fit_kw`` with the validation
    rows added when there are any."""
    model = build_model(spec, X, y, loss)
    fraction = args.val_split if val_split is None else val_split
    X, y, X_val, y_val = split_validation(X, y, fraction, args.seed)
    kw = dict(fit_kw)
    if X_val is not None:
        kw.update(X_val=X_val, y_val=y_val)
    return model, X, y, kw

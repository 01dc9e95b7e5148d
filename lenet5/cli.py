"""Command line: ``python -m lenet5 train | evaluate | predict | reproduce``.

Data (``--data``): a directory with the four MNIST IDX files (gzipped or not), or the
word ``sample`` for the 5,000-digit sample bundled with symconv.  Without ``--data``
the directory in ``$SYMCONV_MNIST`` is used, else MNIST is downloaded once into the
user cache (MD5-checked).  Nothing silently falls back to the sample.

Exit status: 0 success, 2 bad input (message on stderr), 3 the loss diverged (NaN/inf),
130 interrupted by Ctrl-C (a checkpoint was saved; rerun with ``--resume``).

>>> main(["train", "--out", "/tmp/x", "--epochs", "0"])  # prints the error on stderr
2
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from lenet5 import checkpoint
from lenet5.data import DataError, load_mnist, resolve_data_dir
from lenet5.network import BackendError, LeNet5
from lenet5.train import (
    DISTORT_COPIES,
    LAST,
    MEASURED_SDLM_BATCH,
    SDLM_RATE_CAP,
    SDLM_RATE_FACTOR,
    SGD_DEFAULT_LR,
    Config,
    Interrupted,
    TrainingDiverged,
    evaluate,
    train,
)

#: Defaults of the settings a resumed run takes from its checkpoint when not given.
TRAIN_DEFAULTS = dict(
    batch_size=1,
    seed=0,
    optimizer="sdlm",
    lr=None,
    momentum=0.9,
    dtype="float32",
    limit=None,
    distort_copies=DISTORT_COPIES,
)


def _parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(
        prog="python -m lenet5", description="LeNet-5 (LeCun et al. 1998) on MNIST."
    )
    sub = top.add_subparsers(dest="command", required=True)
    data_help = "MNIST directory, or 'sample' (bundled); default $SYMCONV_MNIST, else download"
    backend_help = "kernel backend: generated C (default) or generated NumPy"

    t = sub.add_parser("train", help="train (or resume) a run into RUNDIR")
    t.add_argument("--data", help=data_help)
    t.add_argument("--out", required=True, metavar="RUNDIR", help="run directory")
    t.add_argument("--epochs", type=int, default=20, help="passes over the training set (20)")
    t.add_argument("--batch-size", type=int, help="digits per update (1, the paper's online)")
    t.add_argument("--backend", choices=("c", "numpy"), default="c", help=backend_help)
    t.add_argument("--seed", type=int, help="random seed (0)")
    t.add_argument("--resume", action="store_true", help="continue from RUNDIR/" + LAST)
    t.add_argument(
        "--overwrite", action="store_true", help="start over in a RUNDIR that holds a run"
    )
    t.add_argument(
        "--distort",
        action="store_true",
        help="each pass: the digits plus random affine distortions of them",
    )
    t.add_argument(
        "--distort-copies",
        type=int,
        metavar="K",
        help=f"distorted copies of each digit per pass with --distort ({DISTORT_COPIES}; "
        "the paper's augmented set: 9)",
    )
    t.add_argument("--optimizer", choices=("sdlm", "sgd"), help="sdlm (paper, default) or sgd")
    t.add_argument(
        "--lr",
        type=float,
        help=f"sdlm: factor on the paper's rate schedule ({SDLM_RATE_FACTOR:g}; the rate is "
        f"capped at {SDLM_RATE_CAP:g}); "
        f"sgd: rate ({SGD_DEFAULT_LR})",
    )
    t.add_argument("--momentum", type=float, help="sgd momentum (0.9)")
    t.add_argument("--dtype", choices=("float32", "float64"), help="float type (float32)")
    t.add_argument("--limit", type=int, help="train on the first N training digits only")
    t.add_argument("--no-progress", action="store_true", help="no progress bar")

    e = sub.add_parser("evaluate", help="test error of a checkpoint")
    e.add_argument("--checkpoint", required=True, metavar="F")
    e.add_argument("--data", help=data_help)
    e.add_argument("--backend", choices=("c", "numpy"), default="c", help=backend_help)

    r = sub.add_parser(
        "reproduce",
        help="train several seeds as parallel processes; table, plot, JSON summary",
        description="Each seed trains as its own `lenet5 train` process in OUT/seed-N "
        "(run again to resume); OUT gets reproduce.json, reproduce.md and reproduce.png.",
    )
    r.add_argument("--data", help=data_help)
    r.add_argument("--out", required=True, metavar="OUT", help="study directory")
    r.add_argument("--seeds", default="0-4", help="A-B, A,B,C or A (0-4)")
    r.add_argument("--epochs", type=int, default=20, help="passes per seed (20)")
    r.add_argument("--distort", action="store_true", help="train on distorted copies too")
    r.add_argument("--distort-copies", type=int, metavar="K", help="with --distort")
    r.add_argument("--batch-size", type=int, help="digits per update (1)")
    r.add_argument("--lr", type=float, help="as for train")
    r.add_argument("--backend", choices=("c", "numpy"), help=backend_help)
    r.add_argument("--limit", type=int, help="train on N of the training digits only")
    r.add_argument("--jobs", type=int, help="seeds trained at once (the available cores)")
    r.add_argument("--threads", type=int, default=1, help="OpenMP threads per seed (1)")
    r.add_argument("--no-progress", action="store_true", help="no progress bar")

    p = sub.add_parser("predict", help="classify PNG images of digits")
    p.add_argument("--checkpoint", required=True, metavar="F")
    p.add_argument("images", nargs="+", metavar="IMAGE.png")
    p.add_argument("--backend", choices=("c", "numpy"), default="c", help=backend_help)
    return top


def _train_config(args) -> Config:
    given = {k: getattr(args, k) for k in TRAIN_DEFAULTS}
    saved = {}
    if args.resume:
        saved = checkpoint.load(Path(args.out) / LAST).meta.get("config", {})
    settings = {
        k: (given[k] if given[k] is not None else saved.get(k, TRAIN_DEFAULTS[k]))
        for k in TRAIN_DEFAULTS
    }
    return Config(
        out=args.out,
        epochs=args.epochs,
        backend=args.backend,
        distort=args.distort or bool(saved.get("distort", False)),
        progress=not args.no_progress,
        **settings,
    )


def cmd_train(args) -> int:
    cfg = _train_config(args)
    if cfg.optimizer == "sdlm" and cfg.batch_size > MEASURED_SDLM_BATCH and args.lr is None:
        print(
            f"warning: SDLM in batches above {MEASURED_SDLM_BATCH} is untested territory: "
            f"on MNIST, batches of 256 did not train in a pass at any rate tried "
            f"(they collapse to one class or barely move); use --batch-size <= "
            f"{MEASURED_SDLM_BATCH} or --optimizer sgd",
            file=sys.stderr,
        )
    data = load_mnist(args.data)
    summary = train(cfg, data, resume=args.resume, overwrite=args.overwrite)
    last = summary["epochs"][-1]
    out = Path(cfg.out)
    print(f"test error after {last['epoch']} passes: {100 * last['test_error']:.2f}%")
    print(f"pictures: {out / 'learning_curve.png'}, {out / 'confusion_matrix.png'}, "
          f"{out / 'misclassified.png'}")  # fmt: skip
    print(f"summary: {out / 'summary.json'}; checkpoint: {out / LAST}")
    return 0


def _network_for(ck: checkpoint.Checkpoint, backend: str) -> LeNet5:
    return LeNet5(backend, next(iter(ck.params.values())).dtype)


def cmd_evaluate(args) -> int:
    ck = checkpoint.load(args.checkpoint)
    data = load_mnist(args.data)
    net = _network_for(ck, args.backend)
    error, loss, _ = evaluate(net, ck.params, data.test_images, data.test_labels)
    wrong = round(error * len(data.test_labels))
    print(
        f"test error {100 * error:.2f}% ({wrong}/{len(data.test_labels)}), "
        f"mean MAP loss {loss:.4f}, data {data.source}"
    )
    return 0


def read_png(path) -> np.ndarray:
    """A digit image file -> uint8 (28, 28), ink bright as in MNIST.

    The image is converted to grayscale and resized to 28x28; a light background (mean
    above 127, e.g. black ink on white paper) is inverted, so both conventions work.
    """
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            gray = im.convert("L").resize((28, 28), Image.Resampling.LANCZOS)
    except (FileNotFoundError, UnidentifiedImageError, OSError) as exc:
        raise DataError(f"{path}: cannot read image ({exc})") from exc
    pixels = np.asarray(gray, np.uint8)
    return 255 - pixels if pixels.mean() > 127 else pixels


def cmd_predict(args) -> int:
    ck = checkpoint.load(args.checkpoint)
    net = _network_for(ck, args.backend)
    images = np.stack([read_png(p) for p in args.images])
    _, _, predicted = evaluate(net, ck.params, images, np.zeros(len(images), np.int64))
    for path, digit in zip(args.images, predicted, strict=True):
        print(f"{path}: {digit}")
    return 0


def cmd_reproduce(args) -> int:
    from lenet5 import reproduce

    if args.epochs < 1 or (args.jobs is not None and args.jobs < 1) or args.threads < 1:
        raise ValueError("--epochs, --jobs and --threads must be positive integers")
    # One directory for every child (a download happens here, once); bad data exits 2 here.
    data = str(resolve_data_dir(args.data).resolve())
    load_mnist(data)
    passed = []
    for flag in ("batch_size", "lr", "backend", "distort_copies", "limit"):
        value = getattr(args, flag)
        if value is not None:
            passed += [f"--{flag.replace('_', '-')}", str(value)]
    study = reproduce.Study(
        data=data,
        out=args.out,
        seeds=reproduce.parse_seeds(args.seeds),
        epochs=args.epochs,
        distort=args.distort,
        train_args=passed,
        jobs=args.jobs,
        threads=args.threads,
        progress=not args.no_progress,
    )
    try:
        result = reproduce.run_study(study)
    except KeyboardInterrupt:
        print(f"stopped: the seeds saved their checkpoints; run the same command again "
              f"to resume (partial report in {args.out})", file=sys.stderr)  # fmt: skip
        return 130
    print(reproduce.table(result), end="")
    out = Path(args.out)
    print(f"report: {out / 'reproduce.md'}, {out / 'reproduce.png'}, {out / 'reproduce.json'}")
    if len(result["finished_seeds"]) == len(study.seeds):
        return 0
    return 130 if any(r["exit_status"] == 130 for r in result["seeds"]) else 3


COMMANDS = {
    "train": cmd_train,
    "evaluate": cmd_evaluate,
    "predict": cmd_predict,
    "reproduce": cmd_reproduce,
}


def main(argv=None) -> int:
    args = _parser().parse_args(argv)
    try:
        return COMMANDS[args.command](args)
    except TrainingDiverged as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 3
    except Interrupted as exc:
        print(f"stopped: {exc}; continue with --resume", file=sys.stderr)
        return 130
    except (DataError, checkpoint.CheckpointError, BackendError, ValueError, TypeError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2

"""Command line: ``python -m lenet5 train | evaluate | predict | reproduce``.

Data (``--data``): a directory with the four MNIST IDX files (gzipped or not), or the
word ``sample`` for the 5,000-digit sample bundled with symconv.  Without ``--data``
the directory in ``$SYMCONV_MNIST`` is used, else MNIST is downloaded once into the
user cache (MD5-checked).  Nothing silently falls back to the sample.

``predict`` prints each image's class with its probability under the MAP criterion
(softmax of the negative RBF penalties) and the runner-up; ``--json`` prints them as JSON.

Exit status: 0 success, 2 bad input (message on stderr: bad arguments, data, checkpoint,
image or run folder, a failed write), 3 the loss diverged (NaN/inf), 130 interrupted by
Ctrl-C (``train`` saved a checkpoint; rerun with ``--resume``).

>>> main(["train", "--out", "/tmp/x", "--epochs", "0"])  # prints the error on stderr
2
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import warnings
from pathlib import Path

import numpy as np

from lenet5 import checkpoint
from lenet5.data import DataError, load_mnist, resolve_data_dir, to_input
from lenet5.network import BackendError, LeNet5
from lenet5.posterior import class_probabilities
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
    resume_checkpoint,
    train,
)

#: The largest image ``predict`` reads (width x height): larger ones are refused before
#: they are decoded (a small compressed file can decode to gigabytes).
MAX_IMAGE_PIXELS = 4096 * 4096
#: A 28x28 digit whose gray levels span fewer than this many steps (of 255) is reported
#: as blank: its prediction says nothing about the image.
BLANK_SPAN = 8

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
        help=f"distorted copies of each digit per pass with --distort ({DISTORT_COPIES}: "
        "the paper's 540,000 distorted digits)",
    )
    t.add_argument("--optimizer", choices=("sdlm", "sgd"), help="sdlm (paper, default) or sgd")
    t.add_argument(
        "--lr",
        type=float,
        help=f"sdlm: factor on the paper's rate schedule capped at {SDLM_RATE_CAP:g} "
        f"({SDLM_RATE_FACTOR:g}); "
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

    p = sub.add_parser(
        "predict",
        help="classify PNG images of digits: the class, its probability, the runner-up",
    )
    p.add_argument("--checkpoint", required=True, metavar="F")
    p.add_argument("images", nargs="+", metavar="IMAGE.png")
    p.add_argument("--backend", choices=("c", "numpy"), default="c", help=backend_help)
    p.add_argument(
        "--json", action="store_true", help="print one JSON list (every class's probability)"
    )
    return top


def _train_config(args) -> Config:
    given = {k: getattr(args, k) for k in TRAIN_DEFAULTS}
    saved = {}
    if args.resume:
        out = Path(args.out)
        if out.is_dir():
            saved = checkpoint.load(resume_checkpoint(out, log=lambda *a: None)).meta
            saved = saved.get("config", {})
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

    Every mode Pillow reads is converted to gray at full precision (16-bit images scaled
    from 0..65535), transparent pixels composited on white (a digit drawn in the alpha
    channel alone shows), then resized to 28x28; a light background (mean above 127,
    e.g. black ink on white paper) is inverted, so both conventions work.  Images of
    more than ``MAX_IMAGE_PIXELS`` pixels are refused before decoding (DataError); a
    blank result prints a warning on stderr.
    """
    from PIL import Image

    _check_png_chunks(path)
    try:
        with warnings.catch_warnings():
            # Pillow warns from 89 M pixels on; the smaller limit below refuses those anyway.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            im = Image.open(path)
        with im:
            if im.width * im.height > MAX_IMAGE_PIXELS:
                raise DataError(
                    f"{path}: image of {im.width}x{im.height} pixels, more than the "
                    f"{MAX_IMAGE_PIXELS} pixels predict reads (e.g. 4096x4096); scale it down"
                )
            gray = _gray(im)
    except DataError:
        raise
    except Image.DecompressionBombError as exc:  # Pillow's own, larger limit, hit in open()
        raise DataError(
            f"{path}: image of more than the {MAX_IMAGE_PIXELS} pixels predict reads ({exc})"
        ) from None
    except (OSError, ValueError, SyntaxError, EOFError) as exc:
        raise DataError(f"{path}: cannot read image ({type(exc).__name__}: {exc})") from exc
    small = Image.fromarray(gray).resize((28, 28), Image.Resampling.LANCZOS)
    pixels = np.clip(np.rint(np.asarray(small)), 0, 255).astype(np.uint8)
    if int(pixels.max()) - int(pixels.min()) < BLANK_SPAN:
        print(
            f"warning: {path}: the image is blank; its prediction is meaningless", file=sys.stderr
        )
    return 255 - pixels if pixels.mean() > 127 else pixels


PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _check_png_chunks(path) -> None:
    """A PNG's chunk lengths fit in the file (DataError otherwise): Pillow allocates what a
    chunk declares before reading it, so a few corrupt bytes could ask for gigabytes.

    >>> import tempfile, os
    >>> with tempfile.TemporaryDirectory() as d:
    ...     bad = os.path.join(d, "bad.png")
    ...     with open(bad, "wb") as f:
    ...         _ = f.write(PNG_SIGNATURE + (2**30).to_bytes(4, "big") + b"IDAT" + b"x" * 20)
    ...     try:
    ...         _check_png_chunks(bad)
    ...     except DataError as e:
    ...         print(str(e).split(": ", 1)[1])
    PNG chunk 'IDAT' at byte 8 declares 1073741824 bytes, more than the file holds
    """
    with open(path, "rb") as f:
        if f.read(8) != PNG_SIGNATURE:
            return
        size = os.fstat(f.fileno()).st_size
        pos = 8
        while pos + 8 <= size:
            head = f.read(8)
            length, kind = int.from_bytes(head[:4], "big"), head[4:].decode("latin-1")
            if length > size - pos - 12:  # the 12: length, type and CRC fields
                raise DataError(
                    f"{path}: PNG chunk {kind!r} at byte {pos} declares {length} bytes, "
                    "more than the file holds"
                )
            if kind == "IEND":  # Pillow reads no further either
                return
            pos += 12 + length
            f.seek(pos)


def predictions(paths, probabilities: np.ndarray) -> list:
    """One record per image: the class, its probability, the runner-up and its probability,
    and every class's probability.

    >>> r = predictions(["a.png"], np.array([[0.1, 0.7, 0.2] + [0.0] * 7]))[0]
    >>> r["class"], r["probability"], r["runner_up"], r["runner_up_probability"]
    (1, 0.7, 2, 0.2)
    """
    records = []
    for path, p in zip(paths, probabilities, strict=True):
        first, second = np.argsort(-p, kind="stable")[:2]
        records.append(
            {
                "image": str(path),
                "class": int(first),
                "probability": float(p[first]),
                "runner_up": int(second),
                "runner_up_probability": float(p[second]),
                "probabilities": [float(v) for v in p],
            }
        )
    return records


def _gray(im) -> np.ndarray:
    """The first frame of ``im`` as float32 gray levels 0..255, transparency on white."""
    im.load()
    if im.mode.startswith("I;16") or im.mode == "I":
        # 16-bit PNGs open as I;16 or I (32-bit holding 0..65535): scale, do not clip.
        return (np.asarray(im, np.float64) * (255 / 65535)).clip(0, 255).astype(np.float32)
    if im.mode == "F":
        return np.asarray(im, np.float32).clip(0, 255)
    if "A" in im.mode or "a" in im.mode or "transparency" in im.info:
        from PIL import Image

        rgba = im.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        im = Image.alpha_composite(white, rgba)
    elif im.mode not in ("L", "1", "RGB", "P"):
        im = im.convert("RGB")  # CMYK, YCbCr, LAB, HSV: through RGB
    return np.asarray(im.convert("L"), np.float32)


def cmd_predict(args) -> int:
    ck = checkpoint.load(args.checkpoint)
    net = _network_for(ck, args.backend)
    images = np.stack([read_png(p) for p in args.images])
    penalties = net.penalties(ck.params, to_input(images, net.dtype))
    records = predictions(args.images, class_probabilities(penalties))
    if args.json:
        print(json.dumps(records, indent=1))
        return 0
    for r in records:
        print(
            f"{r['image']}: {r['class']} (probability {_percent(r['probability'])}; "
            f"runner-up {r['runner_up']}, {_percent(r['runner_up_probability'])})"
        )
    return 0


def _percent(p: float) -> str:
    """A probability as a percentage; a tiny one in scientific notation (not "0.00%").

    >>> _percent(0.98765), _percent(3.9e-30)
    ('98.77%', '3.9e-28%')
    """
    return f"{100 * p:.2f}%" if p >= 5e-5 else f"{100 * p:.1e}%"


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
    except KeyboardInterrupt:  # before training started, or a second Ctrl-C
        print("stopped: interrupted", file=sys.stderr)
        return 130
    except Interrupted as exc:
        print(f"stopped: {exc}; continue with --resume", file=sys.stderr)
        return 130
    except (DataError, checkpoint.CheckpointError, BackendError, ValueError, TypeError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:  # a file the command reads or writes (disk full, permissions)
        name = f" {exc.filename}" if exc.filename else ""
        print(f"error:{name} {exc.strerror or exc}", file=sys.stderr)
        return 2

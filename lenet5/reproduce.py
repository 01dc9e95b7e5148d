"""``python -m lenet5 reproduce``: the paper's experiment on several seeds, as one command.

Every seed is an independent ``python -m lenet5 train`` process with its own run folder
``OUT/seed-N`` (the train/resume machinery of ``lenet5.train``), as many at once as
``--jobs`` (default: the cores available to this process), each with ``--threads``
OpenMP threads (default 1).  Run the command again to continue: a finished seed is
skipped, an interrupted one is resumed from its last checkpoint.  When every seed has
stopped, OUT receives

* ``reproduce.json``: per seed the test error after every pass, the best pass, wall
  time, training images/s, peak RSS and status; per pass the mean and standard
  deviation over the finished seeds;
* ``reproduce.md``: the same as a Markdown table;
* ``reproduce.png``: test error by pass, per seed and mean +- std, with the paper's
  figure as a reference line.

>>> parse_seeds("0-4"), parse_seeds("1,3,7"), parse_seeds("2")
([0, 1, 2, 3, 4], [1, 3, 7], [2])
"""

from __future__ import annotations

import io
import json
import os
import re
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from codegen.writer import write_atomic

#: The paper's test error (%) on MNIST after 20 passes: plain, and with distorted digits.
PAPER_ERROR = {False: 0.95, True: 0.8}
#: Per-seed bookkeeping of this command (wall time and peak RSS over all its invocations).
SEED_RECORD = "reproduce-seed.json"
LOG = "train.log"


def parse_seeds(text: str) -> list[int]:
    """Seeds from "A-B" (inclusive), "A,B,C" or "A"; ValueError otherwise."""
    seeds: list[int] = []
    for part in str(text).split(","):
        m = re.fullmatch(r"\s*(\d+)\s*(?:-\s*(\d+)\s*)?", part)
        if not m:
            raise ValueError(f"--seeds: expected A-B, A,B,C or A (non-negative), got {text!r}")
        lo, hi = int(m.group(1)), int(m.group(2) if m.group(2) is not None else m.group(1))
        if hi < lo:
            raise ValueError(f"--seeds: empty range {part.strip()!r}")
        seeds.extend(range(lo, hi + 1))
    if len(set(seeds)) != len(seeds):
        raise ValueError(f"--seeds: a seed is listed twice in {text!r}")
    return seeds


def available_cores() -> int:
    """Cores this process may run on (its CPU affinity where the OS reports it)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


@dataclass
class Study:
    """A multi-seed study.  ``train_args`` are passed to every ``lenet5 train``."""

    data: str
    out: str
    seeds: list[int]
    epochs: int = 20
    distort: bool = False
    train_args: list[str] = field(default_factory=list)
    jobs: int | None = None
    threads: int = 1
    progress: bool = True

    def run_dir(self, seed: int) -> Path:
        return Path(self.out) / f"seed-{seed}"


# ----------------------------------------------------------------------------- running


def _summary(run: Path) -> dict | None:
    try:
        return json.loads((run / "summary.json").read_text())
    except (OSError, ValueError):
        return None


def _done(study: Study, seed: int) -> bool:
    s = _summary(study.run_dir(seed))
    return bool(s) and s.get("status") == "complete" and len(s["epochs"]) >= study.epochs


def _command(study: Study, seed: int) -> list[str]:
    run = study.run_dir(seed)
    cmd = [sys.executable, "-m", "lenet5", "train", "--data", study.data, "--out", str(run)]
    cmd += ["--seed", str(seed), "--epochs", str(study.epochs), "--no-progress"]
    cmd += ["--distort"] if study.distort else []
    cmd += list(study.train_args)
    # An earlier invocation left a checkpoint: continue it (train checks the settings match).
    cmd += ["--resume"] if (run / "checkpoint-last.npz").exists() else []
    return cmd


def _record(run: Path) -> dict:
    try:
        return json.loads((run / SEED_RECORD).read_text())
    except (OSError, ValueError):
        return {"wall_seconds": 0.0, "peak_rss_mb": 0.0, "returncodes": []}


class _Job:
    """One running seed: its process, log file and how much of the log was echoed."""

    def __init__(self, study: Study, seed: int):
        self.seed = seed
        self.run = study.run_dir(seed)
        self.run.mkdir(parents=True, exist_ok=True)
        env = dict(os.environ, OMP_NUM_THREADS=str(study.threads), PYTHONUNBUFFERED="1")
        self.log = open(self.run / LOG, "a")  # noqa: SIM115  (closed in finish)
        self.echoed = self.log.tell()
        self.t0 = time.monotonic()
        self.proc = subprocess.Popen(
            _command(study, seed), stdout=self.log, stderr=subprocess.STDOUT, env=env
        )

    def new_lines(self) -> list[str]:
        with open(self.run / LOG) as f:
            f.seek(self.echoed)
            text = f.read()
        complete = text[: text.rfind("\n") + 1]
        self.echoed += len(complete.encode())
        return complete.splitlines()

    def finish(self, status: int, rusage) -> int:
        self.log.close()
        rec = _record(self.run)
        rec["wall_seconds"] += time.monotonic() - self.t0
        # The training process's own peak (its summary); wait4's ru_maxrss (KiB on Linux)
        # also counts its children, such as a compiler building the kernels.
        own = (_summary(self.run) or {}).get("peak_rss_mb", rusage.ru_maxrss / 1024)
        rec["peak_rss_mb"] = max(rec["peak_rss_mb"], own)
        code = os.waitstatus_to_exitcode(status)
        rec["returncodes"].append(code)
        write_atomic(self.run / SEED_RECORD, (json.dumps(rec, indent=2) + "\n").encode())
        return code


def run_study(study: Study, log=print) -> dict:
    """Train every unfinished seed (``jobs`` at a time), then write and return the report.

    Ctrl-C is delivered to the children too (same process group): each saves its
    checkpoint; the report is written for what finished and KeyboardInterrupt re-raised.
    """
    out = Path(study.out)
    out.mkdir(parents=True, exist_ok=True)
    jobs = max(1, study.jobs or available_cores())
    todo = [s for s in study.seeds if not _done(study, s)]
    for s in study.seeds:
        if s not in todo:
            log(f"seed {s}: complete in {study.run_dir(s)}, skipped")
    total = len(study.seeds) * study.epochs
    bar = _bar(study, total, sum(_passes(study, s) for s in study.seeds))
    write = bar.write if bar is not None else log
    running: dict[int, _Job] = {}
    codes: dict[int, int] = {}
    try:
        while todo or running:
            while todo and len(running) < jobs:
                job = _Job(study, todo.pop(0))
                running[job.proc.pid] = job
                write(f"seed {job.seed}: started ({study.run_dir(job.seed)}/{LOG})")
            time.sleep(1.0)
            for pid, job in list(running.items()):
                for line in job.new_lines():
                    write(f"seed {job.seed} | {line}")
                waited, status, rusage = os.wait4(pid, os.WNOHANG)
                if waited == 0:
                    continue
                for line in job.new_lines():
                    write(f"seed {job.seed} | {line}")
                codes[job.seed] = job.finish(status, rusage)
                del running[pid]
                write(f"seed {job.seed}: {_status_word(codes[job.seed])}")
            if bar is not None:
                bar.n = sum(_passes(study, s) for s in study.seeds)
                bar.refresh()
    except KeyboardInterrupt:
        for pid, job in running.items():  # the children got the SIGINT and save; wait
            _, status, rusage = os.wait4(pid, 0)
            codes[job.seed] = job.finish(status, rusage)
        write_report(study)
        write(f"interrupted; partial report in {out}; run the same command again to resume")
        raise
    finally:
        if bar is not None:
            bar.close()
    return write_report(study)


def _passes(study: Study, seed: int) -> int:
    s = _summary(study.run_dir(seed))
    return min(len(s["epochs"]), study.epochs) if s else 0


def _status_word(code: int) -> str:
    return {0: "complete", 3: "diverged (loss NaN/inf)", 130: "interrupted"}.get(
        code, f"failed (exit status {code})"
    )


def _bar(study: Study, total: int, done: int):
    if not study.progress:
        return None
    from tqdm import tqdm

    return tqdm(total=total, initial=done, unit="pass", desc=f"{len(study.seeds)} seeds")


# ----------------------------------------------------------------------------- report


def collect(study: Study) -> dict:
    """The study's results from its run folders (seeds without any finished pass omitted)."""
    seeds = []
    for s in study.seeds:
        run = study.run_dir(s)
        summ = _summary(run)
        if not summ or not summ["epochs"]:
            continue
        errors = [100 * e["test_error"] for e in summ["epochs"]]
        seconds = sum(e["seconds"] for e in summ["epochs"])
        images = sum(e["seconds"] * e["train_images_per_s"] for e in summ["epochs"])
        rec = _record(run)
        best = int(np.argmin(errors))
        seeds.append(
            {
                "seed": s,
                "run": str(run),
                "status": summ.get("status"),
                "passes": len(errors),
                "test_error_by_pass": errors,
                "train_error_by_pass": [100 * e["train_error"] for e in summ["epochs"]],
                "final_test_error": errors[-1],
                "best_pass": best + 1,
                "best_test_error": errors[best],
                "train_seconds": seconds,
                "wall_seconds": rec["wall_seconds"],
                "train_images_per_s": images / seconds if seconds > 0 else 0.0,
                "peak_rss_mb": rec["peak_rss_mb"],
                "exit_status": rec["returncodes"][-1] if rec["returncodes"] else None,
                "kernels": summ.get("kernels", []),
            }
        )
    by_pass = []
    for p in range(study.epochs):
        vals = [r["test_error_by_pass"][p] for r in seeds if r["passes"] > p]
        if vals:
            by_pass.append(
                {
                    "pass": p + 1,
                    "seeds": len(vals),
                    "mean": float(np.mean(vals)),
                    "std": float(np.std(vals, ddof=1)) if len(vals) > 1 else 0.0,
                }
            )
    kernels = []  # every library any seed trained on, once, in the seeds' order
    for r in seeds:
        kernels += [k for k in r["kernels"] if k not in kernels]
    finished = [r for r in seeds if r["passes"] >= study.epochs]
    final = [r["test_error_by_pass"][study.epochs - 1] for r in finished]
    return {
        "epochs": study.epochs,
        "distort": study.distort,
        "train_args": study.train_args,
        "threads_per_seed": study.threads,
        "paper_test_error": PAPER_ERROR[study.distort],
        "seeds": seeds,
        "kernels": kernels,
        "by_pass": by_pass,
        "finished_seeds": [r["seed"] for r in finished],
        "final_mean": float(np.mean(final)) if final else None,
        "final_std": float(np.std(final, ddof=1)) if len(final) > 1 else None,
        "final_max": float(np.max(final)) if final else None,
    }


def table(result: dict) -> str:
    """The per-seed table (Markdown) with the mean +- std row."""
    e = result["epochs"]
    lines = [
        f"| seed | test error after {e} passes | best pass (error) | wall time | "
        "training images/s | peak RSS | status |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in result["seeds"]:
        final = f"{r['test_error_by_pass'][e - 1]:.2f}%" if r["passes"] >= e else "-"
        lines.append(
            f"| {r['seed']} | {final} | {r['best_pass']} ({r['best_test_error']:.2f}%) | "
            f"{r['wall_seconds'] / 60:.1f} min | {r['train_images_per_s']:,.0f} | "
            f"{r['peak_rss_mb']:.0f} MB | {r['status']} ({r['passes']} passes) |"
        )
    if result["final_mean"] is not None:
        std = result["final_std"]
        spread = f" +- {std:.2f}" if std is not None else ""
        lines.append(
            f"| mean of {len(result['finished_seeds'])} | **{result['final_mean']:.2f}%{spread}**"
            f" (max {result['final_max']:.2f}%) | | | | | paper: {result['paper_test_error']}% |"
        )
    return "\n".join(lines + _kernels_lines(result["kernels"])) + "\n"


def _kernels_lines(kernels: list) -> list[str]:
    """The kernel libraries the seeds trained on, under the table: one line each."""
    if not kernels:
        return []
    head = (
        "Kernels" if len(kernels) == 1 else "Kernels (more than one: not every seed rounds alike)"
    )
    lines = ["", f"{head}:"]
    for k in kernels:
        flags = " ".join(k.get("flags", []))
        lines.append(f"- `{k.get('library') or k.get('backend')}` {k.get('compiler', '')} {flags}")
    return [line.rstrip() for line in lines]


def plot(result: dict):
    """Test error by pass: each seed, the mean +- std band, the paper's figure."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator, ScalarFormatter

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for r in result["seeds"]:
        p = np.arange(1, r["passes"] + 1)
        ax.plot(p, r["test_error_by_pass"], lw=0.8, alpha=0.5, label=f"seed {r['seed']}")
    if result["by_pass"]:
        p = np.array([b["pass"] for b in result["by_pass"]])
        mean = np.array([b["mean"] for b in result["by_pass"]])
        std = np.array([b["std"] for b in result["by_pass"]])
        ax.plot(p, mean, color="k", lw=2, label="mean")
        ax.fill_between(p, mean - std, mean + std, color="k", alpha=0.15, label="mean +- std")
    ref = result["paper_test_error"]
    ax.axhline(ref, color="tab:red", ls="--", label=f"paper ({ref}%)")
    ax.set_xlabel("pass")
    ax.set_ylabel("test error (%, log scale)")
    # Log scale: the first passes (a few %) and the last (below 1%) both stay readable.
    ax.set_yscale("log")
    ax.yaxis.set_major_formatter(ScalarFormatter())
    ax.yaxis.set_minor_formatter(ScalarFormatter())
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    title = "LeNet-5 on MNIST" + (", distorted training digits" if result["distort"] else "")
    ax.set_title(f"{title}: {len(result['seeds'])} seeds")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    return buf.getvalue()


def write_report(study: Study) -> dict:
    """Write reproduce.json, reproduce.md and reproduce.png into OUT; return the result."""
    out = Path(study.out)
    result = collect(study)
    write_atomic(out / "reproduce.json", (json.dumps(result, indent=2) + "\n").encode())
    write_atomic(out / "reproduce.md", table(result).encode())
    write_atomic(out / "reproduce.png", plot(result))
    return result

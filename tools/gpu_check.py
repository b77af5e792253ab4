"""Check everything CUDA in one command, in under 8 minutes on one GPU.

    python tools/gpu_check.py                        # writes results/gpu_check/
    python tools/gpu_check.py --out DIR --overwrite  # replace an earlier check's folder
    python tools/gpu_check.py --quick                # small runs: one small demo video, tiny training and
                                                     # benchmark (CI on the CPU: about half a minute)

Checks, each one line PASS / FAIL / SKIP, each with its own time limit; a failing check does not
stop the others, and the whole run stays within --budget seconds (checks that no longer fit are
skipped and say so):
  cuda-tests      the tests marked `cuda` (pytest -m cuda): tracker, --amp and target-model fit on
                  CUDA against the CPU, a DDP training step over NCCL, the benchmark on CUDA
  demo-cpu        evaluate.py --dset demo on the CPU at TH 1.0 and 0.7: the reference masks (with
                  --quick or without CUDA: one small video at TH 0.7)
  demo-cuda       the same on CUDA; per-object IoU against the CPU masks, pixels that agree, and
                  the J&F difference (PASS within 0.005 at each TH)
  amp             the same with --amp (float16 autocast) against CUDA float32 (PASS within 0.005)
  train           one short epoch of `train.py --dset synthetic` under torchrun, then a second run
                  that resumes it for one more epoch: one process on one GPU (or on the CPU), two
                  processes over NCCL where there are two GPUs (--quick: one process, no launcher)
  bench-*         benchmark.py on CUDA for both backbones, float32 and --amp, with --json
                  (on the CPU: one tiny CPU run, so the command keeps working)
Without CUDA the CUDA checks are SKIP, the CPU parts run, and the exit status is 0 unless one of
those fails. Everything (logs, masks, JSON, gpu_check.json, and gpu_table.md with the benchmark
numbers) goes under --out. Exit status: 0 no FAIL, 1 some FAIL, 2 bad arguments, 130/143 interrupted.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # lib.*, when run as `python tools/gpu_check.py`

from lib.atomic import atomic_write_text, unwritable_reason  # noqa: E402
from lib.interrupts import command_line, exit_status, interrupted_line, sigterm_as_interrupt  # noqa: E402

MARKER = "gpu_check.json"  # written first: a folder holding it is this tool's and may be replaced
JF_TOLERANCE = 0.005
THRESHOLDS = ("1.0", "0.7")
DEMO_MODEL = ROOT / "weights" / "demo_synthetic_rn18.pth"
QUICK_DEMO_DATA = ["--layout", "davis", "--videos", "1", "--frames", "6", "--size", "160x96", "--seed", "1000",
                   "--split", "val"]
MIN_SECONDS = 20  # a check is skipped when less than this is left of the budget


@dataclass
class Outcome:
    """One check's verdict: status PASS / FAIL / SKIP and a one-line detail."""

    name: str
    status: str
    detail: str
    seconds: float = 0.0
    data: dict = field(default_factory=dict)


class Runner:
    """Runs commands from the repository root with a time limit each, logging to OUT/logs/NAME.log,
    within an overall deadline. A command that overruns is stopped with its whole process group."""

    def __init__(self, out: Path, budget_s: float, env: dict[str, str] | None = None) -> None:
        self.out, self.deadline = out, time.monotonic() + budget_s
        self.env = {**os.environ, **(env or {})}
        self.current: subprocess.Popen | None = None
        (out / "logs").mkdir(parents=True, exist_ok=True)

    def left(self) -> float:
        return self.deadline - time.monotonic()

    def log_path(self, name: str) -> Path:
        return self.out / "logs" / f"{name}.log"

    def run(self, name: str, args: list[str], limit_s: float, env: dict | None = None) -> tuple[int | None, str]:
        """(exit status or None after a timeout, the log's text). The limit is cut to the budget left."""
        limit = max(1.0, min(limit_s, self.left()))
        path = self.log_path(name)
        with open(path, "w") as log:
            log.write(f"$ {' '.join(args)}\n")
            log.flush()
            self.current = subprocess.Popen(args, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT,
                                            env={**self.env, **(env or {})}, start_new_session=True)
            try:
                code: int | None = self.current.wait(timeout=limit)
            except subprocess.TimeoutExpired:
                self.stop()
                code = None
                why = "its time limit" if limit >= limit_s else "the end of the time budget (--budget)"
                log.write(f"\n[gpu_check: stopped after {limit:.0f} s, {why}]\n")
            finally:
                self.current = None
        return code, path.read_text(errors="replace")

    def stop(self) -> None:
        """SIGTERM to the running command's process group (torchrun's workers too), SIGKILL after 10 s."""
        proc = self.current
        if proc is None or proc.poll() is not None:
            return
        for sig, wait in ((signal.SIGTERM, 10), (signal.SIGKILL, 5)):
            try:
                os.killpg(proc.pid, sig)
                proc.wait(timeout=wait)
                return
            except ProcessLookupError:
                return
            except subprocess.TimeoutExpired:
                continue


@dataclass
class Context:
    out: Path
    quick: bool
    cuda: str | None  # the GPU's name, None without CUDA
    runner: Runner
    gpus: int = 0
    python: str = sys.executable
    demo: dict[str, Path] = field(default_factory=dict)  # variant -> evaluate.py --output folder that worked


def _tail(text: str, lines: int = 3) -> str:
    """The last non-empty lines of a log, joined, for a FAIL detail."""
    kept = [line.strip() for line in text.splitlines() if line.strip()][-lines:]
    return " | ".join(kept)[-300:]


def _failed(code: int | None, log: str) -> str:
    """A failed command in one line: its exit status and the end of its log (which says why a
    stopped command was stopped)."""
    return f"{'stopped' if code is None else f'exit {code}'}: {_tail(log)}"


# ------------------------------------------------------------------------------------ cuda tests
def check_cuda_tests(ctx: Context) -> Outcome:
    if ctx.quick:
        return Outcome("cuda-tests", "SKIP", "--quick (run them with: python -m pytest -m cuda)")
    xml = ctx.out / "cuda_tests.xml"
    args = [ctx.python, "-m", "pytest", "-q", "-rs", "-m", "cuda", f"--junitxml={xml}", "tests"]
    code, log = ctx.runner.run("cuda-tests", args, 240)
    counts = _junit_counts(xml)
    summary = ", ".join(f"{v} {k}" for k, v in counts.items() if v) or "no tests"
    if code is None or code not in (0, 5) or counts.get("failures") or counts.get("errors"):
        return Outcome("cuda-tests", "FAIL", f"{summary}; {_failed(code, log)}", data=counts)
    ran = counts.get("tests", 0) - counts.get("skipped", 0)
    if ctx.cuda is None or ran == 0:
        return Outcome("cuda-tests", "SKIP", f"{summary}: no CUDA", data=counts)
    return Outcome("cuda-tests", "PASS", summary, data=counts)


def _junit_counts(path: Path) -> dict[str, int]:
    """tests / failures / errors / skipped of a pytest JUnit XML report (empty when it is missing)."""
    import xml.etree.ElementTree as ET

    try:
        root = ET.parse(path).getroot()
    except (OSError, ET.ParseError):
        return {}
    suite = root if root.tag == "testsuite" else root.find("testsuite")
    if suite is None:
        return {}
    return {k: int(suite.get(k, 0)) for k in ("tests", "failures", "errors", "skipped")}


# ------------------------------------------------------------------------------------ demo data
def _evaluate_demo(ctx: Context, variant: str, device: str, *extra: str) -> tuple[Path | None, str]:
    """evaluate.py --dset demo into OUT/demo/VARIANT; (that folder or None, a failure detail).
    With --quick, or without CUDA (no CUDA masks to compare with): one small video made with the demo
    data's generator (seed 1000), scored at TH 0.7."""
    out = ctx.out / "demo" / variant
    args = [ctx.python, "evaluate.py", "--dev", device, "--output", str(out), *extra]
    if small_demo(ctx):
        data = ctx.out / "demo" / "quick_data"
        if not data.is_dir():
            code, log = ctx.runner.run("demo-data", [ctx.python, "-m", "dataset.synthetic", "--out", str(data),
                                                     *QUICK_DEMO_DATA], 60)
            if code != 0:
                return None, f"making the demo video: {_failed(code, log)}"
        args += ["--dset", "dv2017val", "--davis-root", str(data), "--model", str(DEMO_MODEL), "--TH", "0.7"]
    else:
        args += ["--dset", "demo", "--TH", *THRESHOLDS]
    code, log = ctx.runner.run(f"demo-{variant}", args, 240)
    if code != 0:
        return None, _failed(code, log)
    ctx.demo[variant] = out
    return out, ""


def small_demo(ctx: Context) -> bool:
    return ctx.quick or ctx.cuda is None


def demo_results(folder: Path) -> dict[float, Path]:
    """TH -> results folder of an evaluate.py --output folder (read from each run's summary.json)."""
    found = {}
    for summary in folder.glob("*/summary.json"):
        found[float(json.loads(summary.read_text())["settings"]["TH"])] = summary.parent
    return found


def compare_results(reference: Path, other: Path) -> dict:
    """Two results folders of the same videos: J&F of each, per-object IoU of the masks, equal pixels.

    Per object (sequence, id) the IoU is over all its frames together; objects empty in both count 1.
    """
    import numpy as np

    from lib.image_io import read_label_png

    jf = [json.loads((f / "summary.json").read_text())["scores"]["J&F-Mean"] for f in (reference, other)]
    ious, equal, total = {}, 0, 0
    for seq in sorted(p for p in reference.iterdir() if p.is_dir() and not p.name.startswith(".")):
        frames = sorted(seq.glob("*.png"))
        if not frames:
            continue
        a = np.stack([read_label_png(f) for f in frames])
        b = np.stack([read_label_png(other / seq.name / f.name) for f in frames])
        equal, total = equal + int((a == b).sum()), total + a.size
        for oid in sorted((set(np.unique(a)) | set(np.unique(b))) - {0}):
            union = np.logical_or(a == oid, b == oid).sum()
            ious[f"{seq.name}#{oid}"] = float(np.logical_and(a == oid, b == oid).sum() / union) if union else 1.0
    worst = min(ious, key=ious.get) if ious else None
    return {"jf": jf, "jf_diff": jf[1] - jf[0], "object_iou": ious, "worst_object": worst,
            "min_iou": ious[worst] if worst else 1.0, "mean_iou": float(np.mean(list(ious.values()))) if ious else 1.0,
            "equal_pixels": equal / total if total else 1.0}


def _comparison(name: str, reference: Path, other: Path, what: str) -> Outcome:
    """PASS when the J&F differ by at most JF_TOLERANCE at every threshold both folders hold."""
    ref, oth = demo_results(reference), demo_results(other)
    if not ref or set(ref) != set(oth):
        return Outcome(name, "FAIL", f"thresholds differ: {sorted(ref)} against {sorted(oth)}")
    parts, data, ok = [], {}, True
    for tau in sorted(ref, reverse=True):
        c = compare_results(ref[tau], oth[tau])
        data[f"TH{tau:g}"] = c
        ok &= abs(c["jf_diff"]) <= JF_TOLERANCE
        parts.append(f"TH {tau:g}: J&F {c['jf'][0]:.4f} -> {c['jf'][1]:.4f} ({c['jf_diff']:+.4f}), object IoU "
                     f"min {c['min_iou']:.3f} ({c['worst_object']}) mean {c['mean_iou']:.3f}, "
                     f"{100 * c['equal_pixels']:.2f}% pixels equal")
    return Outcome(name, "PASS" if ok else "FAIL", f"{what}; " + "; ".join(parts)
                   + ("" if ok else f" (limit {JF_TOLERANCE} J&F)"), data=data)


def check_demo_cpu(ctx: Context) -> Outcome:
    out, why = _evaluate_demo(ctx, "cpu", "cpu")
    if out is None:
        return Outcome("demo-cpu", "FAIL", why)
    scores = {f"TH{t:g}": json.loads((f / "summary.json").read_text())["scores"]["J&F-Mean"]
              for t, f in sorted(demo_results(out).items(), reverse=True)}
    what = "one small video, " if small_demo(ctx) else "the demo data, "
    return Outcome("demo-cpu", "PASS", what + "J&F " + ", ".join(f"{k} {v:.4f}" for k, v in scores.items()),
                   data=scores)


def check_demo_cuda(ctx: Context) -> Outcome:
    if ctx.cuda is None:
        return Outcome("demo-cuda", "SKIP", "no CUDA")
    if "cpu" not in ctx.demo:
        return Outcome("demo-cuda", "SKIP", "no CPU masks to compare with (demo-cpu failed)")
    out, why = _evaluate_demo(ctx, "cuda", "cuda:0")
    if out is None:
        return Outcome("demo-cuda", "FAIL", why)
    return _comparison("demo-cuda", ctx.demo["cpu"], out, "CUDA float32 against the CPU")


def check_amp(ctx: Context) -> Outcome:
    if ctx.cuda is None:
        return Outcome("amp", "SKIP", "no CUDA")
    if "cuda" not in ctx.demo:
        return Outcome("amp", "SKIP", "no CUDA float32 masks to compare with (demo-cuda failed)")
    out, why = _evaluate_demo(ctx, "cuda_amp", "cuda:0", "--amp")
    if out is None:
        return Outcome("amp", "FAIL", why)
    return _comparison("amp", ctx.demo["cuda"], out, "--amp against CUDA float32")


# ------------------------------------------------------------------------------------ training
def train_processes(ctx: Context) -> int:
    """Two processes (NCCL between them) when there are two GPUs; one process otherwise: torchrun then
    starts a single worker, which trains without a process group (NCCL needs a GPU per process; the
    cuda-tests check runs a DDP step over a one-process NCCL group instead)."""
    return 2 if ctx.gpus >= 2 and not ctx.quick else 1


def train_args(ctx: Context, epochs: int) -> list[str]:
    """Tiny synthetic training (tinier with --quick or without CUDA) under torchrun; --quick without
    the launcher, which with one process only sets the environment (and costs a torch import)."""
    folder = ctx.out / "train"
    sizes = (["--size", "64x48", "--seq-len", "2", "--batch-size", "1", "--epoch-samples", "1",
              "--synthetic-videos", "1", "--synthetic-frames", "3"] if ctx.quick or ctx.cuda is None else
             ["--size", "224x128", "--seq-len", "3", "--batch-size", "4", "--epoch-samples", "8",
              "--synthetic-videos", "4", "--synthetic-frames", "8"])
    launcher = [] if ctx.quick else ["-m", "torch.distributed.run", "--standalone",
                                     f"--nproc_per_node={train_processes(ctx)}"]
    return [ctx.python, *launcher, "train.py", "--dset", "synthetic", "--backbone-weights", "none", "--workers", "0", *sizes,
            "--name", "gpu_check", "--checkpoints", str(folder / "checkpoints"), "--tensorboard", str(folder / "tb"),
            "--tmcache", str(folder / "tmcache"), "--max-epochs", str(epochs)]


def check_train(ctx: Context) -> Outcome:
    nproc = train_processes(ctx)
    where = (f"{nproc} processes on {nproc} GPUs, NCCL" if nproc > 1 else
             "1 process on cuda:0" if ctx.cuda else "1 process on the CPU (no CUDA)")
    where = f"{'train.py (--quick: no torchrun)' if ctx.quick else 'torchrun'}, {where}"
    env = {"NCCL_DEBUG": "INFO"} if nproc > 1 else {}
    env["OMP_NUM_THREADS"] = ctx.runner.env.get("OMP_NUM_THREADS", "2")  # else torchrun sets 1, with a warning
    checkpoints = ctx.out / "train" / "checkpoints" / "gpu_check"
    steps = []
    for epochs in (1, 2):
        code, log = ctx.runner.run(f"train-epoch{epochs}", train_args(ctx, epochs), 150, env)
        if code != 0:
            return Outcome("train", "FAIL", f"{where}, run {epochs}: {_failed(code, log)}")
        steps.append(log)
    missing = [p.name for p in (checkpoints / "gpu_check_ep0001.pth", checkpoints / "gpu_check_ep0002.pth")
               if not p.is_file()]
    if missing:
        return Outcome("train", "FAIL", f"{where}: missing {', '.join(missing)} in {checkpoints}")
    if "epoch 1 done" not in steps[1]:
        return Outcome("train", "FAIL", f"{where}: the second run did not resume from epoch 1 "
                                        f"(see {ctx.runner.log_path('train-epoch2')})")
    if nproc > 1 and "NCCL" not in steps[0]:
        return Outcome("train", "FAIL", f"{where}, but the log shows no NCCL (NCCL_DEBUG=INFO)")
    return Outcome("train", "PASS", f"{where}: epoch 1, then resumed for epoch 2")


# ------------------------------------------------------------------------------------ benchmark
def bench_runs(ctx: Context) -> list[tuple[str, list[str]]]:
    """(check name, benchmark.py arguments) of the runs this machine gets."""
    if ctx.cuda is None:
        tiny = ["--size", "64x48", "--frames", "3", "--repeats", "1", "--warmup-frames", "2", "--rates", "0", "1",
                "--objects", "1", "--threads", "1"]
        return [("bench-cpu-smoke", ["--ftext", "resnet18", "--dev", "cpu", *tiny])]
    if ctx.quick:
        sizes = {False: ["--frames", "6", "--repeats", "1", "--warmup-frames", "2"]}
        sizes[True] = sizes[False]
    else:  # float32 with the published schedule; --amp with fewer object counts, to stay within the budget
        sizes = {False: ["--frames", "30", "--repeats", "3", "--objects", "1", "3", "5", "--reference-mode"],
                 True: ["--frames", "30", "--repeats", "3", "--objects", "1", "5"]}
    return [(f"bench-{ftext}{'-amp' if amp else ''}", ["--ftext", ftext, "--dev", "cuda:0", *sizes[amp]]
             + (["--amp"] if amp else []))
            for amp in (False, True) for ftext in ("resnet18", "resnet101")]


def check_benchmark(ctx: Context, name: str, args: list[str]) -> Outcome:
    path = ctx.out / "bench" / f"{name}.json"
    code, log = ctx.runner.run(name, [ctx.python, "benchmark.py", *args, "--json", str(path)], 150)
    if code != 0 or not path.is_file():
        return Outcome(name, "FAIL", _failed(code, log))
    report = json.loads(path.read_text())
    st = report["stages"]
    passed = sum(t["pass"] for t in report["targets"])
    return Outcome(name, "PASS", f"{report['settings']['machine']}: full path {1000 * st['full_per_frame_s']:.1f} "
                                 f"ms/frame, reuse path {1000 * st['reuse_per_frame_s']:.1f}; speed targets "
                                 f"{passed}/{len(report['targets'])} met -> {path}", data={"json": str(path)})


def bench_table(paths: list[Path]) -> str:
    """A Markdown table of benchmark reports: one row per report."""
    lines = ["| backbone | precision | full path ms/frame | reuse path ms/frame | rate 0.5 | 5 objects | "
             "start frame ms | peak MiB | device |", "|---|---|---:|---:|---:|---:|---:|---:|---|"]
    for path in paths:
        r = json.loads(path.read_text())
        s, st = r["settings"], r["stages"]
        rate = {row["rate"]: row for row in r["rates"]}
        five = {row["objects"]: row for row in r["objects"]}.get(5)
        ms = lambda v: f"{1000 * v:.1f}" if v is not None else "-"  # noqa: E731
        lines.append(f"| {s['backbone']} | {'float16 (--amp)' if s['amp'] else 'float32'} | "
                     f"{ms(st['full_per_frame_s'])} | {ms(st['reuse_per_frame_s'])} | "
                     f"{ms(rate[0.5]['per_frame_s']) if 0.5 in rate else '-'} | "
                     f"{ms(five['per_frame_s']) if five else '-'} | {ms(st['start_frame_s'])} | "
                     f"{max(row['peak_mib'] for row in r['rates']):.0f} | {s['machine']} |")
    return "\n".join(lines) + "\n"


# ------------------------------------------------------------------------------------ driver
def plan(ctx: Context) -> list[tuple[str, Callable[[], Outcome]]]:
    checks: list[tuple[str, Callable[[], Outcome]]] = [
        ("cuda-tests", lambda: check_cuda_tests(ctx)),
        ("demo-cpu", lambda: check_demo_cpu(ctx)),
        ("demo-cuda", lambda: check_demo_cuda(ctx)),
        ("amp", lambda: check_amp(ctx)),
        ("train", lambda: check_train(ctx)),
    ]
    for name, args in bench_runs(ctx):
        checks.append((name, lambda name=name, args=args: check_benchmark(ctx, name, args)))
    return checks


def run_checks(ctx: Context, say: Callable[[str], None]) -> list[Outcome]:
    outcomes = []
    for name, check in plan(ctx):
        started = time.monotonic()
        if ctx.runner.left() < MIN_SECONDS:
            outcome = Outcome(name, "SKIP", "the time budget is spent (raise --budget)")
        else:
            try:
                outcome = check()
            except Exception as err:  # a broken check is reported, and the others still run
                outcome = Outcome(name, "FAIL", f"{type(err).__name__}: {err}")
        outcome.seconds = time.monotonic() - started
        outcomes.append(outcome)
        say(f"{outcome.status:4s}  {outcome.name}: {outcome.detail} [{outcome.seconds:.0f} s]")
    return outcomes


def _output_problem(out: Path, overwrite: bool) -> str | None:
    if out.exists() and not out.is_dir():
        return f"--out {out} is a file; give a folder"
    if out.is_dir() and any(out.iterdir()):
        if not (out / MARKER).is_file():
            return f"--out {out} holds other files; give a new or empty folder"
        if not overwrite:
            return f"--out {out} holds an earlier check; pass --overwrite to replace it, or another --out"
    reason = unwritable_reason(out)
    return f"--out {out}: {reason}" if reason else None


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, default=ROOT / "results" / "gpu_check", help="folder for everything written")
    p.add_argument("--overwrite", action="store_true", help="replace the folder of an earlier check")
    p.add_argument("--quick", action="store_true", help="small runs only (CI)")
    p.add_argument("--budget", type=float, default=450, help="seconds for all checks together (default 450)")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.budget < MIN_SECONDS:
        print(f"error: --budget {args.budget:g}: give at least {MIN_SECONDS} seconds", file=sys.stderr)
        return 2
    out = args.out.resolve()
    problem = _output_problem(out, args.overwrite)
    if problem:
        print(f"error: {problem}", file=sys.stderr)
        return 2
    runner = None
    try:
        with sigterm_as_interrupt():
            if (out / MARKER).is_file():
                shutil.rmtree(out)
            out.mkdir(parents=True, exist_ok=True)
            atomic_write_text(out / MARKER, json.dumps({"state": "running"}) + "\n")
            import torch

            cuda = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
            print(f"gpu_check: CUDA {cuda}" if cuda else
                  "gpu_check: CUDA is not available on this machine: the CUDA checks are SKIP, the CPU parts run",
                  flush=True)
            # --quick: tiny tensors gain nothing from threads, and on a shared CPU busy threads slow them
            runner = Runner(out, args.budget, {"OMP_NUM_THREADS": "1"} if args.quick else None)
            ctx = Context(out, args.quick, cuda, runner, torch.cuda.device_count() if cuda else 0)
            started = time.monotonic()
            outcomes = run_checks(ctx, lambda line: print(line, flush=True))
            benches = [Path(o.data["json"]) for o in outcomes if o.status == "PASS" and "json" in o.data]
            if benches:
                atomic_write_text(out / "gpu_table.md", bench_table(benches))
            atomic_write_text(out / MARKER, json.dumps({"cuda": cuda, "torch": torch.__version__, "quick": args.quick,
                                                        "checks": [asdict(o) for o in outcomes]}, indent=2) + "\n")
    except KeyboardInterrupt as err:
        if runner is not None:
            runner.stop()
        again = command_line(argv) + ("" if args.overwrite else " --overwrite")
        print(interrupted_line(err, f"the logs of the checks so far are in {out}", again), file=sys.stderr)
        return exit_status(err)
    count = {s: sum(o.status == s for o in outcomes) for s in ("PASS", "FAIL", "SKIP")}
    print(f"gpu_check: {count['PASS']} PASS, {count['FAIL']} FAIL, {count['SKIP']} SKIP in "
          f"{time.monotonic() - started:.0f} s on {cuda or 'a machine without CUDA'}; everything is in {out}")
    return 1 if count["FAIL"] else 0


if __name__ == "__main__":
    sys.exit(main())

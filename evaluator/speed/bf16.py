"""float32 against CPU bfloat16: the logic behind `benchmark.py --compare-bf16`.

Times the full path (every frame full) and the reuse path (every frame reused) of one object, by
stage, in float32 and in bfloat16 (the tracker's CPU --amp, here allowed on any CPU), the four
configurations interleaved in rounds; each speed-up is the median over rounds of a ratio taken
within a round. It also reports what the CPU offers for bfloat16: without avx512_bf16 or AMX,
oneDNN emulates bfloat16 arithmetic and bfloat16 is slower, not faster, so the targets
(BF16_TARGETS) are judged only on a CPU with native bfloat16.
"""
from __future__ import annotations

import time
from typing import Callable


from evaluator.speed.benchmark import BenchmarkOptions, Config, RunResult, _median, _settings, prepare
from lib.devices import cpu_bf16_support
from models.tracker import STAGES

# The targets, float32 / bfloat16 time per frame at least, per backbone and path; measured only on a CPU
# with native bfloat16 (elsewhere bfloat16 is emulated and the ratio says nothing about the code).
BF16_TARGETS = {"resnet18": {"full": 2.0, "reuse": 1.8}, "resnet101": {"full": 2.3}}
PRECISIONS = ("float32", "bfloat16")
PATHS = {"full": 0.0, "reuse": 1.0}  # path -> forced reuse rate
def _label(path: str, precision: str) -> str:
    return f"{path} path {precision}"


def run_bf16_comparison(opts: BenchmarkOptions, log: Callable[[str], None] = print) -> dict:
    """Measure (see module docstring) and return the report; `log` gets progress lines."""
    bench = prepare(opts)
    started = time.perf_counter()
    configs = {_label(path, precision): Config(1, rate, by_stage=True, bf16=precision == "bfloat16")
               for path, rate in PATHS.items() for precision in PRECISIONS}
    log("stage timings, float32 and bfloat16 (full path, reuse path):")
    measured = bench.run_interleaved(configs, log)
    paths = {}
    for path in PATHS:
        runs: dict[str, RunResult] = {p: measured[_label(path, p)] for p in PRECISIONS}
        row = {p: {"per_frame_s": r.per_frame_s, "stages": r.stages_s, "stage_sum_s": sum(r.stages_s.values()),
                   "rounds_s": [run.per_frame_s for run in r.rounds], "peak_mib": r.peak_mib}
               for p, r in runs.items()}
        # float32 / bfloat16 time of each round (measured minutes apart at most), and their median
        row["speedup_rounds"] = [a.per_frame_s / b.per_frame_s
                                 for a, b in zip(runs["float32"].rounds, runs["bfloat16"].rounds)]
        row["speedup"] = _median(row["speedup_rounds"])
        paths[path] = row
    settings = _settings(opts, bench.memory.kind)
    settings["benchmark_seconds"] = time.perf_counter() - started
    cpu = cpu_bf16_support()
    return {"settings": settings, "cpu": cpu, "paths": paths, "targets": bf16_targets(opts.backbone, paths, cpu)}


def bf16_targets(backbone: str, paths: dict, cpu: dict) -> list[dict]:
    """The float32 / bfloat16 targets of this backbone: PASS or FAIL on a CPU with native bfloat16, else
    NOT MEASURED (the ratio is still given)."""
    targets = []
    for path, limit in BF16_TARGETS.get(backbone, {}).items():
        value = paths[path]["speedup"]
        status = ("PASS" if value >= limit else "FAIL") if cpu["native"] else "NOT MEASURED"
        targets.append({"name": f"{backbone} {path} path: float32 / bfloat16 per frame", "value": value,
                        "limit": f">= {limit}", "pass": status == "PASS", "status": status,
                        "why": "" if cpu["native"] else cpu["reason"]})
    return targets


def format_bf16_report(report: dict) -> str:
    """The comparison as one plain-text table."""
    s, cpu = report["settings"], report["cpu"]
    h, w = s["size"]
    yes = lambda v: "yes" if v else ("unknown" if v is None else "no")  # noqa: E731
    flags = ", ".join(f"{k} {yes(v)}" for k, v in cpu["flags"].items()) if cpu["cpuinfo_read"] else \
        "/proc/cpuinfo unreadable"
    lines = [f"G-FRTM float32 against CPU bfloat16: {s['backbone']}, {s['machine']}, {w}x{h}, "
             f"{s['frames']} frames, median of {s['repeats']} rounds, torch {s['torch']}, {s['threads_used']} threads",
             f"CPU: {flags}; torch CPU capability {cpu['torch_cpu_capability']}; "
             f"oneDNN bfloat16 {yes(cpu['onednn_bf16'])}", ""]
    full, reuse = report["paths"]["full"], report["paths"]["reuse"]
    cols = [(full, "float32"), (full, "bfloat16"), (reuse, "float32"), (reuse, "bfloat16")]
    lines.append(f"{'stage (per frame, ms)':26s}" + "".join(f"{c:>11s}" for c in
                                                       ("full f32", "full bf16", "reuse f32", "reuse bf16")))

    def row_line(name: str, value: Callable[[dict], float]) -> str:
        return f"  {name:24s}" + "".join(f"{1000 * value(row[p]):11.1f}" for row, p in cols)

    for name in STAGES:
        lines.append(row_line(name, lambda run: run["stages"][name]))
    lines.append(row_line("sum", lambda run: run["stage_sum_s"]))
    lines.append(row_line("timed run (stage syncs)", lambda run: run["per_frame_s"]))
    lines.append("")
    for path, row in report["paths"].items():
        rounds = " ".join(f"{x:.2f}" for x in row["speedup_rounds"])
        per = " / ".join(" ".join(f"{1000 * t:.0f}" for t in row[p]["rounds_s"]) for p in PRECISIONS)
        lines.append(f"{path} path: float32 / bfloat16 per frame {row['speedup']:.2f}x (rounds {rounds}; "
                     f"ms/frame float32 / bfloat16 by round: {per})")
    lines.append("targets:")
    for t in report["targets"]:
        why = f"; {t['why']}" if t["why"] else ""
        lines.append(f"  {t['status']}  {t['name']}: {t['value']:.2f}x ({t['limit']}{why})")
    return "\n".join(lines)

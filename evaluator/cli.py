"""evaluate.py's work: check the request, run each threshold (shared among torchrun's processes), score, write.

The exit status and the one line on stderr come from `main_status`: 0, 2 with `error: ...` for a
refused request or a failed run, 130/143 with what is saved and the command that continues after
Ctrl-C/SIGTERM. Under torchrun only rank 0 prints them, and only rank 0 checks, prepares and
writes the shared files; every process validates the request before any work.
"""
from __future__ import annotations

import argparse
import csv
import io
import json
import sys
from pathlib import Path

import torch

from dataset.errors import DatasetError
from lib.atomic import atomic_write_text, unwritable_reason
from lib.created_folders import missing_folders
from evaluator.davis_scoring import ScoringError
from evaluator import demo_set
from evaluator.processes import RunFolder, start
from evaluator.state import RunState
from evaluator.threshold import ThresholdRun, not_scored_reason, report_scores, run_threshold, score_folder
from evaluator.runner import EvaluationError, print_final_table, results_dir_name
from models.builder import load_network
from models.tracker import AmpUnavailable, check_cpu_bf16
from lib.image_io import ImageReadError
from lib.interrupts import exit_status, interrupted_line, sigterm_as_interrupt
from lib.launcher import is_rank_zero
from evaluator.result_folders import (
    FolderPlan,
    FolderRefused,
    check_complete_folders,
    plan_folder,
    prepare_folder,
    run_settings,
)
from models.backbone import BackboneWeightsError
from models.checkpoint import CheckpointError
from lib.distributed import (DistInfo, PeerStopped, ProcessFailure, broadcast_object, lost_a_peer, on_every_process,
                             on_main, teardown)

# Each set's root: the flag that gives it, the `paths` entry used without it (None: the flag is required).
ROOT_PATHS = {"--davis-root": "davis", "--ytvos-root": "yt2018", "--yt2019-root": "yt2019", "--mose-root": "mose",
              "--lvos-root": "lvos", "--root": None}
USER_ERRORS = (DatasetError, CheckpointError, BackboneWeightsError, ScoringError, ImageReadError, FileNotFoundError)
# what stops every process with a message (anything else is a bug: a traceback, and torchrun stops the others)
REQUEST_ERRORS = (EvaluationError, FolderRefused, *USER_ERRORS)


def main_status(args: argparse.Namespace, argv: list[str] | None, paths: dict, default_models: dict,
                demo_model: Path) -> int:
    """Run evaluate.py and return its exit status; prints at most one line on stderr (rank 0 only)."""
    state = RunState(argv)
    speaks = is_rank_zero()
    try:
        with sigterm_as_interrupt():
            run(args, paths, default_models, demo_model, state)
    except (EvaluationError, ProcessFailure) as err:
        if speaks:
            state.prune()
            print(f"error: {err}", file=sys.stderr)
        return 2
    except PeerStopped:  # rank 0 prints the reason
        return 2
    except KeyboardInterrupt as err:  # Ctrl-C, or SIGTERM as Terminated
        if speaks:
            print(interrupted_line(err, state.saved(), state.resume_command()), file=sys.stderr)
        return exit_status(err)
    except RuntimeError as err:
        if not lost_a_peer(err):
            raise
        if speaks:  # e.g. Ctrl-C on another machine, or a process killed: torchrun's report says which
            print(f"error: another process stopped before the run finished (interrupted, or killed: see torchrun's "
                  f"report below); {state.saved()}; to continue: {state.resume_command()}", file=sys.stderr)
        return 2
    return 0


def run(args: argparse.Namespace, paths: dict, default_models: dict, demo_model: Path,
        state: RunState | None = None) -> None:
    """Evaluate (or with --eval-only, score) as `args` ask; raises EvaluationError for a refused request."""
    state = state or RunState([])
    try:
        info = start("cpu" if args.eval_only else args.dev)  # None: cuda:0 when CUDA exists, else the CPU
    except ValueError as err:
        raise EvaluationError(str(err)) from None
    try:
        if args.eval_only:
            _score_only(args, paths, info, state)
        else:
            _evaluate(args, paths, default_models, demo_model, info, state)
    except (FolderRefused, *USER_ERRORS) as err:
        raise EvaluationError(str(err)) from err
    finally:
        teardown(info)


def _say(info: DistInfo):
    return print if info.is_main else (lambda *a, **k: None)


def _check_request(args, paths: dict, default_models: dict, demo_model: Path, device: torch.device,
                   say) -> tuple[Path | None, str]:
    """Settings that need no data, checked before any data is read or generated; returns the model."""
    if args.amp and device.type == "cpu":
        try:
            check_cpu_bf16()
        except AmpUnavailable as err:
            raise EvaluationError(str(err)) from None
    if args.dset == "folder" and not args.root:
        raise EvaluationError("--dset folder needs --root DIR, a folder holding JPEGImages/<sequence>/ and "
                              "Annotations/<sequence>/")
    return _resolve_model(args, paths, default_models, demo_model, say)


def _unique_thresholds(taus: list[float], say) -> list[float]:
    """--TH values in the order given, each once (two values that name the same folder count as one)."""
    by_folder: dict[str, float] = {}
    for tau in taus:
        by_folder.setdefault(f"{tau:g}", tau)
    unique = list(by_folder.values())
    if len(unique) < len(taus):
        say(f"--TH: {' '.join(f'{t:g}' for t in taus)} names some thresholds more than once; "
            f"each runs once: {' '.join(f'{t:g}' for t in unique)}")
    return unique


def _evaluate(args, paths: dict, default_models: dict, demo_model: Path, info: DistInfo, state: RunState) -> None:
    say, device = _say(info), info.device
    output_root = Path(args.output or paths["output"])
    scoring_set = demo_set.scoring_set(args.dset)
    taus = _unique_thresholds(args.tau, say)
    model_path, model_name = on_every_process(
        lambda: _check_request(args, paths, default_models, demo_model, device, say), info, REQUEST_ERRORS)
    state.created = missing_folders(output_root)
    on_main(lambda: _check_writable(output_root, "--output"), info)
    # the model before the data: a refused checkpoint should not wait for the demo videos to be generated
    net, trained_with = on_every_process(lambda: load_network(model_path, args.ftext, device), info, REQUEST_ERRORS)
    root = _dataset_root(args, paths, output_root, info, state)
    from dataset.registry import eval_set_info, load_eval_sequences

    sequences = on_every_process(lambda: load_eval_sequences(scoring_set, root, split_file=args.split_file,
                                                             sequences=args.sequences), info, REQUEST_ERRORS)
    set_info = eval_set_info(scoring_set, sequences)
    backbone_weights = args.backbone_weights or trained_with
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    run_folder = RunFolder(output_root, info) if info.distributed else None
    try:
        if run_folder:
            on_every_process(run_folder.check_shared, info, (ValueError,))

        plans = broadcast_object(on_main(lambda: _prepare_folders(
            args, output_root, root, model_path, model_name, net.cfg.backbone, backbone_weights, taus, sequences,
            state), info), info)
        state.planned = True
        run = ThresholdRun(
            args.dset, set_info, sequences, net, backbone_weights, args.fast, args.amp, args.save_overlays, args.zip,
            {"device": str(device), "torch": torch.__version__}, info, REQUEST_ERRORS, run_folder)
        names = [s.name for s in sequences]
        sweep_rows = []
        for index, plan in enumerate(plans):
            state.at(plan.folder, names, index, len(plans))
            if plan.complete:  # finished before an interrupt of this very sweep
                say(f"{plan.folder}: finished earlier, kept")
                sweep_rows.append((plan.tau, json.loads((plan.folder / "summary.json").read_text())))
                continue
            where = f"device {device}" if not info.distributed else \
                f"{info.world_size} processes on {'one GPU each' if device.type == 'cuda' else 'the CPU'}"
            say(f"{args.dset}: {len(sequences)} sequences, model {model_name} ({net.cfg.backbone}), TH {plan.tau:g}, "
                f"{where} -> {plan.folder}")
            kept = len(sequences) - len(plan.todo)  # finished by an earlier run
            if kept:
                say(f"continuing: {kept} of {len(sequences)} sequences already finished there")
            sweep_rows.append((plan.tau, run_threshold(run, plan)))
        state.at(plans[-1].folder, names, len(plans), len(plans))
        if len(taus) > 1 and info.is_main:
            _write_sweep(output_root / f"{args.dset}-{model_name}-sweep", sweep_rows)
    finally:
        if run_folder:
            run_folder.remove()


def _prepare_folders(args, output_root: Path, data_root: Path, model_path: Path | None, model_name: str,
                     backbone: str, backbone_weights: str, taus: list[float], sequences: list,
                     state: RunState) -> list[FolderPlan]:
    """Every threshold's folder is checked before the first one runs, then all are prepared (rank 0)."""
    plans = []
    shared = run_settings(args.dset, data_root, model_path, backbone, backbone_weights, args.fast, args.amp)
    for tau in taus:
        folder = output_root / results_dir_name(args.dset, model_name, tau)
        settings = {**shared, "TH": tau}
        plans.append(plan_folder(folder, tau, settings, sequences, args.overwrite, args.restart))
    check_complete_folders(plans, taus)
    for plan in plans:
        prepare_folder(plan, taus)
        if plan.fresh:
            state.made.append(plan.folder)
    return plans


def _score_only(args, paths: dict, info: DistInfo, state: RunState) -> None:
    """--eval-only DIR: score DIR (only read) and write the CSVs into --output, else into DIR."""
    results = Path(args.eval_only)
    scoring_set = demo_set.scoring_set(args.dset)
    from dataset.registry import eval_set_info, load_eval_sequences

    if eval_set_info(scoring_set).scoring is None and scoring_set != "folder":  # a folder's tree decides, below
        raise EvaluationError(f"{args.dset} has no public ground truth: it cannot be scored locally")
    csv_dir = Path(args.output) if args.output else results
    state.nothing_saved = "no CSV written yet"
    if args.output:
        state.created = missing_folders(csv_dir)
    on_main(lambda: _check_csv_folder(csv_dir, args), info)
    root = _dataset_root(args, paths, Path(args.output or paths["output"]), info, state)
    sequences = on_every_process(lambda: load_eval_sequences(scoring_set, root, split_file=args.split_file,
                                                             sequences=args.sequences), info, REQUEST_ERRORS)
    set_info = eval_set_info(scoring_set, sequences)
    if set_info.scoring is None:
        raise EvaluationError(f"{args.dset} at {root} cannot be scored: {not_scored_reason(set_info)}")
    scores = score_folder(set_info, sequences, results, info, REQUEST_ERRORS)

    def write() -> None:
        global_scores = report_scores(args.dset, scores, csv_dir)
        print_final_table(args.dset, {"frames": 0, "fps": float("nan"), "reuse_rate": float("nan"),
                                      "scores": global_scores})
        print(f"wrote the CSV files into {csv_dir}")

    on_main(write, info)


def _check_csv_folder(csv_dir: Path, args) -> None:
    """The folder the CSVs go to is writable and holds no earlier CSVs (unless --overwrite)."""
    flag = "--output" if args.output else "--eval-only"
    if csv_dir.is_dir() or args.output:  # a missing DIR is named by the scoring itself
        _check_writable(csv_dir, flag, "pick a writable folder" if args.output else
                        "add --output OUT to write the CSVs into OUT (DIR is then only read)")
    earlier = [p.name for p in (csv_dir / f"global_results-{args.dset}.csv",
                                csv_dir / f"per-sequence_results-{args.dset}.csv") if p.exists()]
    if earlier and not args.overwrite:
        raise EvaluationError(f"{csv_dir} already holds {', '.join(earlier)}; pass --overwrite to replace them")


def _check_writable(folder: Path, flag: str, advice: str = "pick a writable folder") -> None:
    """Fail in the first second, not after the first sequence, when results cannot be written."""
    reason = unwritable_reason(folder)
    if reason:
        raise EvaluationError(f"{flag}: {reason}; {advice}")


def _dataset_root(args, paths: dict, output_root: Path, info: DistInfo, state: RunState) -> Path:
    if args.dset == "demo":  # generated once, by rank 0, before the others read it
        from dataset.synthetic import generate_dataset

        root = output_root / "demo_data"
        if not root.exists():
            state.generated.append(root)  # a run that fails removes it again

        def generate() -> None:
            print(f"demo: synthetic DAVIS-layout videos in {root}")
            generate_dataset(root, **demo_set.DEMO_DATA)

        on_main(generate, info)
        return root
    from dataset.eval_sets import SET_INFO

    flag = SET_INFO[args.dset].root_flag
    given = getattr(args, flag.lstrip("-").replace("-", "_"))
    return Path(given or paths[ROOT_PATHS[flag]])


def _resolve_model(args, paths: dict, default_models: dict, demo_model: Path, say=print) -> tuple[Path | None, str]:
    """Find the checkpoint; returns (path or None for an untrained demo network, name for folder names)."""
    if args.model:
        candidates = [Path(args.model), Path(paths["models"]) / args.model, Path(paths["models"]) / f"{args.model}.pth"]
        for c in candidates:
            if c.is_file():
                return c, c.stem
        raise EvaluationError(f"--model {args.model}: no such file (looked at {', '.join(map(str, candidates))})")
    if args.dset == "demo":
        if demo_model.is_file():
            return demo_model, demo_model.stem
        say("demo: no trained demo model in weights/: running an UNTRAINED network (masks will be poor; "
              "train one with `python train.py --dset synthetic --backbone-weights none`)")
        return None, "untrained"
    family = "ytvos" if args.dset.startswith("yt") else "davis"
    name = default_models[(args.ftext or "resnet18", family)]
    path = Path(paths["models"]) / name
    if not path.is_file():
        raise EvaluationError(
            f"no checkpoint at {path}: put the published G-FRTM file there (see README, 'Published checkpoints'), "
            f"pass --model PATH, or edit paths['models'] in evaluate.py"
        )
    return path, path.stem


def _write_sweep(folder: Path, rows: list[tuple[float, dict]]) -> None:
    """sweep.csv (TH, J&F, J, F, fps, reuse rate; one row per threshold) and, with matplotlib, sweep.png."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["TH", "J&F", "J", "F", "fps", "reuse_rate"])
    for tau, s in rows:
        sc = s.get("scores") or {}
        w.writerow([f"{tau:g}"] + [f"{sc[k]:.3f}" if k in sc else "" for k in ("J&F-Mean", "J-Mean", "F-Mean")]
                   + [f"{s['fps']:.3f}", f"{s['reuse_rate']:.3f}"])
    csv_path = folder / "sweep.csv"
    atomic_write_text(csv_path, buf.getvalue())
    print(f"sweep: {csv_path}")
    try:
        from evaluator.sweep_plot import plot_sweep
    except ImportError:
        print("sweep plot skipped: matplotlib is not installed (pip install -e .[plot])")
        return
    png = plot_sweep(csv_path, folder / "sweep.png")
    print(f"sweep plot: {png}")

"""evaluate.py's work: resolve the request, run each threshold, score, write, print."""
from __future__ import annotations

import argparse
import csv
import io
import shutil
from pathlib import Path

import torch

from dataset.errors import DatasetError
from lib.atomic import atomic_write_text, unwritable_reason
from lib.davis_scoring import ScoringError
from lib.devices import resolve_device
from lib.evaluation import (
    SUBMISSION_SETS,
    EvaluationError,
    RunOptions,
    build_tracker,
    load_network,
    plan_output,
    print_final_table,
    results_dir_name,
    run_sequences,
    score_run,
)
from lib.image_io import ImageReadError
from lib.run_records import load_sequence_record, write_gate_log, write_submission_zip, write_summary
from models.backbone import BackboneWeightsError
from models.checkpoint import CheckpointError

DEMO_DATA = {"layout": "davis", "num_videos": 4, "num_frames": 30, "size": (176, 320), "seed": 1000, "split": "val"}
USER_ERRORS = (DatasetError, CheckpointError, BackboneWeightsError, ScoringError, ImageReadError, FileNotFoundError)


def run(args: argparse.Namespace, paths: dict, default_models: dict, demo_model: Path) -> None:
    try:
        _run(args, paths, default_models, demo_model)
    except USER_ERRORS as err:
        raise EvaluationError(str(err)) from err


def _run(args, paths, default_models, demo_model: Path) -> None:
    output_root = Path(args.output or paths["output"])
    dset = "dv2017val" if args.dset == "demo" else args.dset
    if args.eval_only:
        _check_writable(Path(args.eval_only), "--eval-only")  # the CSVs are written into the scored folder
    else:  # settings that need no data are checked before any data is read or generated
        try:
            device = resolve_device(args.dev)  # None: cuda:0 when CUDA exists, else the CPU
        except ValueError as err:
            raise EvaluationError(str(err)) from None
        if args.amp and device.type != "cuda":
            raise EvaluationError(f"--amp is float16 autocast on CUDA; device {device} runs float32, drop --amp")
        model_path, model_name = _resolve_model(args, paths, default_models, demo_model)
        _check_writable(output_root, "--output")
    root = _dataset_root(args, paths, output_root)
    split_file = args.split_file
    from dataset.registry import load_eval_sequences

    sequences = load_eval_sequences(dset, root, split_file=split_file, sequences=args.sequences)
    set_name = args.dset

    if args.eval_only:
        results = Path(args.eval_only)
        if dset in SUBMISSION_SETS:
            raise EvaluationError(f"{args.dset} has no public ground truth: it cannot be scored locally")
        earlier = [p.name for p in (results / f"global_results-{set_name}.csv",
                                    results / f"per-sequence_results-{set_name}.csv") if p.exists()]
        if earlier and not args.overwrite:
            raise EvaluationError(f"{results} already holds {', '.join(earlier)}; pass --overwrite to replace them")
        scores = score_run(dset, set_name, sequences, results)
        print_final_table(args.dset, {"frames": 0, "fps": float("nan"), "reuse_rate": float("nan"), "scores": scores})
        print(f"wrote the CSV files into {results}")
        return

    net, trained_with = load_network(model_path, args.ftext, device)
    backbone_weights = args.backbone_weights or trained_with
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True

    plans = []  # every threshold's folder is checked before the first one runs
    for tau in args.tau:
        out = output_root / results_dir_name(args.dset, model_name, tau)
        opts = RunOptions(args.dset, set_name, out, tau, args.fast, args.amp, args.overwrite, args.restart)
        plans.append((tau, out, *plan_output(opts, sequences)))
    sweep_rows = []
    for tau, out, todo, wipe in plans:
        if wipe:
            shutil.rmtree(out)
        tracker = build_tracker(net, backbone_weights, tau, args.fast, args.amp, device)
        print(f"{args.dset}: {len(sequences)} sequences, model {model_name} ({net.cfg.backbone}), TH {tau:g}, "
              f"device {device} -> {out}")
        run_sequences(tracker, todo, out)
        records = [load_sequence_record(out, s.name) for s in sequences]
        scores = None if dset in SUBMISSION_SETS else score_run(dset, set_name, sequences, out)
        settings = {"dset": args.dset, "model": str(model_path) if model_path else "untrained", "backbone":
                    net.cfg.backbone, "backbone_weights": backbone_weights, "tau": tau, "fast": args.fast,
                    "amp": args.amp, "device": str(device), "torch": torch.__version__}
        write_gate_log(out / "gate_log.csv", records, {s.name: s.frame_names for s in sequences})
        summary = write_summary(out / "summary.json", records, scores, settings)
        if dset in SUBMISSION_SETS:
            zip_path = out.parent / f"{out.name}.zip"  # not with_suffix: "TH0.7" has a dot
            write_submission_zip(zip_path, out, [s.name for s in sequences])
            print(f"submission: {zip_path}")
        if args.save_overlays:
            from lib.overlays import save_sequence_overlays

            for seq in sequences:
                save_sequence_overlays(seq, out, records)
        print_final_table(args.dset, summary)
        sweep_rows.append((tau, summary))
    if len(args.tau) > 1:
        _write_sweep(output_root / f"{args.dset}-{model_name}-sweep", sweep_rows)


def _check_writable(folder: Path, flag: str) -> None:
    """Fail in the first second, not after the first sequence, when results cannot be written."""
    if flag == "--eval-only" and not folder.is_dir():
        return  # scoring names the missing folder itself
    reason = unwritable_reason(folder)
    if reason:
        raise EvaluationError(f"{flag}: {reason}; pick a writable folder")


def _dataset_root(args, paths: dict, output_root: Path) -> Path:
    if args.dset == "demo":
        from dataset.synthetic import generate_dataset

        root = output_root / "demo_data"
        print(f"demo: synthetic DAVIS-layout videos in {root}")
        return generate_dataset(root, **DEMO_DATA)
    if args.dset.startswith("dv"):
        return Path(args.davis_root or paths["davis"])
    return Path(args.ytvos_root or paths["yt2018"])


def _resolve_model(args, paths: dict, default_models: dict, demo_model: Path) -> tuple[Path | None, str]:
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
        print("demo: no trained demo model in weights/: running an UNTRAINED network (masks will be poor; "
              "train one with `python train.py --dset synthetic --backbone-weights none`)")
        return None, "untrained"
    family = "davis" if args.dset.startswith("dv") else "ytvos"
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
        from lib.plots import plot_sweep
    except ImportError:
        print("sweep plot skipped: matplotlib is not installed (pip install -e .[plot])")
        return
    png = plot_sweep(csv_path, folder / "sweep.png")
    print(f"sweep plot: {png}")

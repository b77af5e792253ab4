"""train.py's command line -> TrainConfig plus the run's names and folders; checks made before training starts."""
from __future__ import annotations

import argparse
import math
from dataclasses import dataclass, replace
from pathlib import Path

from lib.atomic import unwritable_reason
from lib.devices import resolve_device
from lib.arg_types import parse_frame_size, reuse_threshold_arg
from models.config import BACKBONES, TrackerConfig, TrainConfig
from dataset.eval_sets import EVAL_SETS, SET_INFO

DSETS = ("all", "dv2017", "ytvos2018", "synthetic", "folder")
DSET_ALIASES = {"yt2018": "ytvos2018"}
# --val-dset: evaluate.py's sets with ground truth ('folder' when its tree is fully annotated; 'demo' is
# evaluate.py's generated set, scored as DAVIS 2017 val)
VAL_SETS = tuple(name for name in EVAL_SETS if SET_INFO[name].scoring is not None) + ("folder", "demo")
# the sets whose root train.py already knows (the flag that gives it); the others need --val-root
VAL_ROOT_DEFAULTS = {"dv2016val": "--davis-root", "dv2017val": "--davis-root", "yt2018jjval": "--ytvos-root"}


class TrainingError(RuntimeError):
    """A problem the user can fix: a bad flag, missing data, an unwritable folder, or a diverged run."""


@dataclass(frozen=True)
class RunPaths:
    """Folders of a run (train.py's `paths` dict, overridden by flags)."""

    davis_root: Path
    ytvos_root: Path
    checkpoints: Path
    tensorboard: Path
    tmcache: Path
    synthetic_root: Path | None = None  # --dset synthetic: where the generated videos live
    ytvos_split_file: Path | None = None  # only these YouTube-VOS train/ videos (e.g. dataset/splits/ytvos_jjtrain.txt)
    folder_root: Path | None = None  # --dset folder: the tree of one's own videos (--root)


@dataclass(frozen=True)
class ValidationOptions:
    """--val-dset SET [--val-root DIR] --val-every N --val-TH TH: score the saved checkpoints while training."""

    dset: str  # one of VAL_SETS
    root: Path  # the set's root ('demo': where its videos are generated)
    every: int  # validate epochs that are multiples of this (and the last epoch)
    tau: float  # the reuse threshold validated besides TH 1.0

    @property
    def thresholds(self) -> tuple[float, ...]:
        """TH 1.0 (never reuses: the accuracy of the full path), then --val-TH unless that is 1.0 too."""
        return (1.0,) if self.tau == 1.0 else (1.0, self.tau)

    def due(self, epoch: int, last_epoch: int) -> bool:
        """Whether `epoch` is validated: every --val-every epochs, and the run's last epoch."""
        return epoch % self.every == 0 or epoch == last_epoch


@dataclass(frozen=True)
class TrainOptions:
    """Everything a training run needs: hyperparameters in `cfg`, the rest is about this run."""

    name: str
    cfg: TrainConfig
    paths: RunPaths
    device: str | None
    init_pth: Path | None
    backbone_weights: str
    tmcache_readonly: bool = False
    lr_given: bool = False  # --lr was on the command line: a resumed run switches to it (Trainer._restore)
    keep_last: int | None = None  # --keep-last: epoch checkpoints kept (None: all)
    finetune: Path | None = None  # --finetune: every trained part starts from this G-FRTM checkpoint
    validation: ValidationOptions | None = None  # --val-dset and its flags (None: no validation)
    allow_changed_settings: bool = False  # --allow-changed-settings: resume even with other settings

    @property
    def dataset_stats_dir(self) -> Path:
        """Where the dataset's pixel statistics are cached: next to the target models, unless those are read-only."""
        if self.tmcache_readonly:
            return self.paths.checkpoints / "dataset_stats"
        return self.paths.tmcache / "dataset_stats"

    @property
    def synthetic_root(self) -> Path:
        """--synthetic-root, else a folder named by the generator's settings under <tmcache>/data, or under
        <checkpoints>/data when the target-model cache is read-only (the videos must be written somewhere)."""
        if self.paths.synthetic_root is not None:
            return self.paths.synthetic_root
        c = self.cfg
        h, w = c.image_size
        parent = self.paths.checkpoints if self.tmcache_readonly else self.paths.tmcache
        return parent / "data" / (f"synthetic-train-{w}x{h}-{c.synthetic_videos}x{c.synthetic_frames}"
                                  f"-seed{c.synthetic_seed}")


class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows a flag's default only where it has one (not None / off); 0 and 0.0 are defaults too."""

    def _get_help_string(self, action: argparse.Action) -> str:
        if action.default is None or action.default is False:  # identity: `0 in (None, False)` is True
            return action.help or ""
        return super()._get_help_string(action)


def build_parser(paths: dict[str, str]) -> argparse.ArgumentParser:
    """The argument parser; `paths` (train.py's dict) gives the folder defaults shown in the help."""
    d = TrainConfig()
    p = argparse.ArgumentParser(
        prog="train.py", formatter_class=_HelpFormatter,
        description="Train G-FRTM (gate, template matching, delta generator, refinement network). "
                    "Resumes from the latest checkpoint of --name. Multi-GPU: torchrun --nproc_per_node=N train.py")
    p.add_argument("--name", help="run name: checkpoints go to <checkpoints>/<name>, logs to <tensorboard>/<name> "
                                  "(default: gfrtm_<ftext>_<dset>)")
    p.add_argument("--ftext", choices=BACKBONES, default=d.backbone, help="backbone")
    p.add_argument("--dset", choices=DSETS + tuple(DSET_ALIASES), default=d.dset,
                   help="training data: DAVIS 2017 train, YouTube-VOS 2018 train, both (all), generated "
                        "synthetic videos, or your own videos (folder, with --root); yt2018 = ytvos2018")
    p.add_argument("--dev", help="device, e.g. cuda:0 or cpu (default: cuda:0 when CUDA exists; under torchrun "
                                 "cuda:LOCAL_RANK)")
    p.add_argument("--m1", type=float, default=d.m1,
                   help="cap of the gate's reuse target after the ramp (DAVIS 1.0, YouTube-VOS 0.5)")
    p.add_argument("--m2", type=float, default=d.m2, help="dead zone of the gate loss")
    p.add_argument("--marginEp", type=int, default=d.margin_epochs,
                   help="epochs over which the reuse cap ramps linearly from 0 to m1 (0: m1 from the start)")
    p.add_argument("--initPth", help="initialise the refinement network from this FRTM/G-FRTM checkpoint's "
                                     "'refiner.' weights (non-strict; ignored when resuming)")
    p.add_argument("--finetune", metavar="CKPT",
                   help="start every trained part (gate, template matching, delta generator, refinement network) "
                        "from this G-FRTM checkpoint, a published one or one of this project's; the optimiser and "
                        "the learning-rate schedule start fresh at epoch 1 (ignored when resuming)")
    p.add_argument("--max-epochs", type=int, default=d.max_epochs, help="last epoch")
    p.add_argument("--batch-size", type=int, default=d.batch_size,
                   help="samples per step over all processes (divided among torchrun processes)")
    p.add_argument("--seq-len", type=int, default=d.seq_len, help="frames per sample (N >= 2)")
    p.add_argument("--epoch-samples", type=int, default=d.epoch_samples,
                   help="use at most this many samples per epoch (quick runs; default: the whole epoch)")
    p.add_argument("--workers", type=int, default=d.workers, help="data-loading worker processes per process")
    p.add_argument("--keep-last", type=int, metavar="N",
                   help="after each epoch's checkpoint is saved, delete this run's older epoch checkpoints so that "
                        "only the newest N remain (default: keep all; a 260-epoch ResNet-18 run keeps about 7 GB)")
    p.add_argument("--seed", type=int, default=d.seed, help="random seed")
    p.add_argument("--allow-changed-settings", action="store_true",
                   help="resume even when settings that shape the result (--batch-size, --size, --dset, ...) differ "
                        "from those the checkpoint records; later checkpoints record the new ones")
    p.add_argument("--val-dset", choices=EVAL_SETS + ("demo",), metavar="SET",
                   help=f"after each validated epoch's checkpoint is saved, score it on this evaluation set as "
                        f"evaluate.py does (sets with ground truth: {', '.join(VAL_SETS)}); rows go to "
                        f"<checkpoints>/<name>/validation.csv, the chosen checkpoint to best.pth")
    p.add_argument("--val-root", metavar="DIR",
                   help="root of the --val-dset set (default: --davis-root for dv2016val/dv2017val, --ytvos-root "
                        "for yt2018jjval; needed for lvos and folder)")
    p.add_argument("--val-every", type=int, metavar="N",
                   help="validate every N epochs, and the last epoch (default: 1)")
    p.add_argument("--val-TH", type=reuse_threshold_arg, metavar="TH",
                   help=f"reuse threshold validated besides TH 1.0 (default: {TrackerConfig().tau})")
    p.add_argument("--lr", type=float, help=f"Adam learning rate (default: {d.lr}). When resuming, a value other "
                                            f"than the checkpoint's rescales its schedule to it; without --lr the "
                                            f"checkpoint's is kept")
    p.add_argument("--backbone-weights", default="imagenet",
                   help="'imagenet', 'none' (deterministic random backbone, for synthetic demos) or a torchvision "
                        "ResNet state-dict path")
    p.add_argument("--size", default=f"{d.image_size[1]}x{d.image_size[0]}",
                   help="training frame size WIDTHxHEIGHT (e.g. 854x480; 224x128 for quick runs)")
    p.add_argument("--davis-root", help=f"DAVIS 2017 trainval root; overrides paths['dv2017'] ({paths['dv2017']})")
    p.add_argument("--ytvos-root", help=f"YouTube-VOS 2018 root (with train/); overrides paths['ytvos2018'] "
                                        f"({paths['ytvos2018']})")
    p.add_argument("--root", help="--dset folder: the folder holding JPEGImages/<sequence>/ and "
                                  "Annotations/<sequence>/ (your own videos; docs/own_data.md)")
    p.add_argument("--checkpoints", help=f"checkpoint folder; overrides paths['checkpoints'] ({paths['checkpoints']})")
    p.add_argument("--tensorboard", help=f"TensorBoard folder; overrides paths['tensorboard'] ({paths['tensorboard']})")
    p.add_argument("--tmcache", help=f"target-model cache folder; overrides paths['tmcache'] ({paths['tmcache']})")
    p.add_argument("--tmcache-readonly", action="store_true",
                   help="read cached target models but never write any (e.g. a shared or published cache)")
    p.add_argument("--ytvos-split-file", help="train only on the YouTube-VOS train/ videos listed in this file, e.g. "
                                              "dataset/splits/ytvos_jjtrain.txt to keep the yt2018jjval videos out")
    p.add_argument("--synthetic-root", help="--dset synthetic: folder of the generated videos (default: under "
                                            "<tmcache>/data)")
    p.add_argument("--synthetic-videos", type=int, default=d.synthetic_videos, help="--dset synthetic: videos")
    p.add_argument("--synthetic-frames", type=int, default=d.synthetic_frames,
                   help="--dset synthetic: frames per video")
    return p


def parse_options(argv: list[str] | None, paths: dict[str, str]) -> TrainOptions:
    """Parse the command line; `paths` has the keys dv2017, ytvos2018, checkpoints, tensorboard, tmcache."""
    parser = build_parser(paths)
    args = parser.parse_args(argv)
    try:
        return options_from_args(args, paths)
    except TrainingError as err:
        parser.error(str(err))  # exits with status 2 and the usage line


def options_from_args(args: argparse.Namespace, paths: dict[str, str]) -> TrainOptions:
    dset = DSET_ALIASES.get(args.dset, args.dset)
    for flag, value, low in (("--max-epochs", args.max_epochs, 1), ("--batch-size", args.batch_size, 1),
                             ("--seq-len", args.seq_len, 2), ("--workers", args.workers, 0),
                             ("--marginEp", args.marginEp, 0), ("--synthetic-videos", args.synthetic_videos, 1),
                             ("--synthetic-frames", args.synthetic_frames, 2)):
        if value < low:
            raise TrainingError(f"{flag} {value}: must be at least {low}")
    lr = TrainConfig().lr if args.lr is None else args.lr
    if not lr > 0 or not math.isfinite(lr):
        raise TrainingError(f"--lr {lr}: must be a positive number")
    if args.m1 < 0 or args.m2 < 0:
        raise TrainingError(f"--m1 {args.m1} / --m2 {args.m2}: must not be negative")
    if args.epoch_samples is not None and args.epoch_samples < 1:
        raise TrainingError(f"--epoch-samples {args.epoch_samples}: must be at least 1")
    if args.keep_last is not None and args.keep_last < 1:
        raise TrainingError(f"--keep-last {args.keep_last}: must be at least 1 (the newest checkpoint is what a "
                            f"rerun resumes from); leave it out to keep every epoch's checkpoint")
    if args.dev is not None:
        try:
            resolve_device(args.dev)
        except ValueError as err:
            raise TrainingError(str(err)) from None
    name = args.name if args.name is not None else f"gfrtm_{args.ftext}_{dset}"
    check_run_name(name)
    if args.initPth and not Path(args.initPth).is_file():
        raise TrainingError(f"--initPth {args.initPth}: no such file; pass the path of an FRTM or G-FRTM checkpoint "
                            f"(or leave --initPth out to start the refinement network from scratch)")
    if args.finetune and not Path(args.finetune).is_file():
        raise TrainingError(f"--finetune {args.finetune}: no such file; pass the path of a G-FRTM checkpoint (a "
                            f"published one such as rn18_all.pth, or one of this project's)")
    if args.finetune and args.initPth:
        raise TrainingError("--finetune and --initPth both set the starting weights (--finetune every trained part, "
                            "--initPth only the refinement network); pass one of them")
    if args.synthetic_frames < args.seq_len:
        raise TrainingError(f"--synthetic-frames {args.synthetic_frames} is shorter than --seq-len {args.seq_len}")
    cfg = replace(
        TrainConfig(), backbone=args.ftext, dset=dset, max_epochs=args.max_epochs, batch_size=args.batch_size,
        seq_len=args.seq_len, image_size=parse_size(args.size), lr=lr, m1=args.m1, m2=args.m2,
        margin_epochs=args.marginEp, workers=args.workers, seed=args.seed, epoch_samples=args.epoch_samples,
        synthetic_videos=args.synthetic_videos, synthetic_frames=args.synthetic_frames)
    run_paths = RunPaths(
        davis_root=Path(args.davis_root or paths["dv2017"]),
        ytvos_root=Path(args.ytvos_root or paths["ytvos2018"]),
        checkpoints=Path(args.checkpoints or paths["checkpoints"]),
        tensorboard=Path(args.tensorboard or paths["tensorboard"]),
        tmcache=Path(args.tmcache or paths["tmcache"]),
        synthetic_root=Path(args.synthetic_root) if args.synthetic_root else None,
        ytvos_split_file=Path(args.ytvos_split_file) if args.ytvos_split_file else None,
        folder_root=Path(args.root) if args.root else None,
    )
    weights = args.backbone_weights
    if weights not in ("imagenet", "none"):
        weights = str(Path(weights).resolve())  # recorded in checkpoints and the cache index
    return TrainOptions(name=name, cfg=cfg, paths=run_paths, device=args.dev,
                        init_pth=Path(args.initPth) if args.initPth else None, backbone_weights=weights,
                        tmcache_readonly=args.tmcache_readonly, lr_given=args.lr is not None,
                        keep_last=args.keep_last, finetune=Path(args.finetune) if args.finetune else None,
                        validation=validation_options(args, run_paths),
                        allow_changed_settings=args.allow_changed_settings)


def validation_options(args: argparse.Namespace, run_paths: RunPaths) -> ValidationOptions | None:
    """--val-dset and its flags; None without --val-dset (whose companions are then refused)."""
    if args.val_dset is None:
        given = [flag for flag, value in (("--val-root", args.val_root), ("--val-every", args.val_every),
                                          ("--val-TH", args.val_TH)) if value is not None]
        if given:
            raise TrainingError(f"{given[0]} needs --val-dset SET (the evaluation set to validate on)")
        return None
    dset = args.val_dset
    if dset not in VAL_SETS:
        raise TrainingError(f"--val-dset {dset}: this set has no public ground truth, so it cannot be scored while "
                            f"training; choose one of {', '.join(VAL_SETS)}")
    every = 1 if args.val_every is None else args.val_every
    if every < 1:
        raise TrainingError(f"--val-every {every}: must be at least 1")
    tau = TrackerConfig().tau if args.val_TH is None else args.val_TH
    if dset == "demo":
        if args.val_root is not None:
            raise TrainingError("--val-root: --val-dset demo generates its own videos (those of evaluate.py --dset "
                                "demo); drop --val-root, or pass --val-dset dv2017val --val-root DIR for a DAVIS tree")
        parent = run_paths.checkpoints if args.tmcache_readonly else run_paths.tmcache
        return ValidationOptions(dset, parent / "data" / "demo-val", every, tau)
    if args.val_root is not None:
        root = Path(args.val_root)
    elif dset in VAL_ROOT_DEFAULTS:
        flag = VAL_ROOT_DEFAULTS[dset]
        root = run_paths.davis_root if flag == "--davis-root" else run_paths.ytvos_root
    else:
        raise TrainingError(f"--val-dset {dset} needs --val-root DIR, the folder evaluate.py's "
                            f"{SET_INFO[dset].root_flag} names for it")
    return ValidationOptions(dset, root, every, tau)


def check_run_name(name: str) -> None:
    """--name becomes a folder and the checkpoint files' prefix, so it must be one plain path component
    (with a '/' the run would never find its checkpoints again and would start over each time)."""
    if name in ("", ".", "..") or "/" in name or "\\" in name:
        raise TrainingError(f"--name {name!r}: must be a plain folder name (not empty, '.' or '..', no '/' or '\\'); "
                            f"it names <checkpoints>/<name>/<name>_epNNNN.pth and <tensorboard>/<name>")


def parse_size(text: str) -> tuple[int, int]:
    """'WIDTHxHEIGHT' (as in 854x480) -> (H, W)."""
    try:
        height, width = parse_frame_size(text)
    except ValueError as err:
        raise TrainingError(f"--size: {err}") from None
    if width < 32 or height < 32:
        raise TrainingError(f"--size {text}: frames must be at least 32x32 (the backbone's deepest stride is 32)")
    return height, width


def check_dataset_roots(opts: TrainOptions) -> None:
    """The dataset folders the chosen --dset needs must exist (the synthetic one is generated)."""
    dset = opts.cfg.dset
    needed = []
    if dset in ("dv2017", "all"):
        needed.append((opts.paths.davis_root, "--davis-root", "dv2017", "DAVIS 2017 trainval"))
    if dset in ("ytvos2018", "all"):
        needed.append((opts.paths.ytvos_root, "--ytvos-root", "ytvos2018", "YouTube-VOS 2018"))
    check_folder_flags(dset, opts.paths.folder_root)
    for root, flag, key, what in needed:
        if not root.is_dir():
            found = "is a file at" if root.is_file() else "not found at"
            raise TrainingError(f"{what} {found} {root}: pass {flag} or set paths['{key}'] in train.py "
                                f"(--dset {dset} needs it; --dset synthetic needs no download)")
    split = opts.paths.ytvos_split_file
    if split is not None:
        if dset not in ("ytvos2018", "all"):
            raise TrainingError(f"--ytvos-split-file {split}: --dset {dset} reads no YouTube-VOS videos; "
                                f"use it with --dset ytvos2018 or all")
        if not split.is_file():
            raise TrainingError(f"--ytvos-split-file {split}: no such file; pass a list of train/ video names, "
                                f"one per line (e.g. dataset/splits/ytvos_jjtrain.txt)")


def check_folder_flags(dset: str, root: Path | None) -> None:
    """--root goes with --dset folder, and --dset folder needs a --root that is a folder."""
    if dset != "folder":
        if root is not None:
            raise TrainingError(f"--root {root}: only --dset folder reads it (--dset {dset} reads its own root flag); "
                                f"pass --dset folder to train on that tree")
        return
    if root is None:
        raise TrainingError("--dset folder needs --root DIR, the folder holding JPEGImages/<sequence>/ and "
                            "Annotations/<sequence>/")
    if root.is_file():
        raise TrainingError(f"--root {root}: is a file, not a folder; pass the folder holding JPEGImages/<sequence>/ "
                            f"and Annotations/<sequence>/")
    if not root.is_dir():
        raise TrainingError(f"--root {root}: not found; pass the folder holding JPEGImages/<sequence>/ and "
                            f"Annotations/<sequence>/")


def check_validation_root(val: ValidationOptions) -> None:
    """The --val-dset set's root exists (or, for the generated demo set, can be written)."""
    if val.dset == "demo":
        if not val.root.is_dir():
            check_writable(val.root, "--tmcache (--val-dset demo generates its videos under <tmcache>/data, or "
                                     "<checkpoints>/data with --tmcache-readonly)")
        return
    if not val.root.is_dir():
        flag = "--val-root" if val.dset not in VAL_ROOT_DEFAULTS else f"--val-root (or {VAL_ROOT_DEFAULTS[val.dset]})"
        raise TrainingError(f"--val-dset {val.dset}: no folder at {val.root}; pass {flag} with the set's root")


def check_read_only_cache(root: Path, folder: Path) -> None:
    """--tmcache-readonly reads an existing cache: `root` must hold this run's `folder` (<backbone>-c<c>_gTrue),
    else a mistyped path would silently refit every sample in every epoch."""
    if not root.is_dir():
        raise TrainingError(f"--tmcache {root}: no such folder, and --tmcache-readonly only reads an existing "
                            f"cache; check the path, or drop --tmcache-readonly to build a cache there")
    if not folder.is_dir():
        found = sorted(p.name for p in root.iterdir() if p.is_dir() and p.name.endswith("_gTrue"))
        raise TrainingError(f"--tmcache {root} has no {folder.name} folder, the one this backbone and these target-"
                            f"model settings read (found: {', '.join(found) or 'none'}); pass that cache's root, or "
                            f"drop --tmcache-readonly to build one")


def check_writable(folder: Path, flag: str) -> None:
    """Create `folder` and prove a file can be written there, before any training time is spent."""
    reason = unwritable_reason(folder)
    if reason:
        raise TrainingError(f"{reason}; pass a writable folder with {flag}")

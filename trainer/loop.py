"""The training run: data, model, optimiser, epochs with a progress bar, checkpoints and logs."""
from __future__ import annotations

import importlib
import math
import os
import random
import signal
from pathlib import Path

import numpy as np
import torch
from torch import Tensor
from torch.optim.lr_scheduler import StepLR
from torch.utils.data import DataLoader, Dataset, DistributedSampler
from tqdm import tqdm

from dataset.synthetic import MANIFEST, generate_dataset
from dataset.training import build_training_set
from lib.created_folders import missing_folders, remove_empty_folders
from lib.interrupts import held_signals, unblock_signals
from models.backbone import build_backbone
from models.config import NetworkConfig, TrainConfig
from models.gfrtm import GFRTM
from lib import distributed
from trainer.ddp import wrap
from trainer.checkpoints import (checkpoint_path, latest_checkpoint, load_refiner_init, prune_checkpoints,
                                 read_finetune, read_refiner_init, resume, save_training_checkpoint, switch_initial_lr)
from trainer.epoch_validation import EpochValidation, Validator
from trainer.run_settings import carried_over, check_resume_settings, training_settings
from lib.distributed import DistInfo
from trainer.signals import raise_if_interrupted
from trainer.logging import TrainLogger, sample_grid
from trainer.losses import reuse_margin
from trainer.options import (TrainingError, TrainOptions, check_dataset_roots, check_read_only_cache,
                             check_validation_root, check_writable)
from trainer.step import SequenceForward, frozen_features, target_scores
from trainer.tm_cache import TargetModelCache, TargetModelProvider, cache_info

GATE_PREFIX = "convGS."  # the gate's parameters get no weight decay
LOSS_KEYS = ("loss", "seg", "delta", "gate", "iou", "reuse_rate")


def make_optimizer(net: GFRTM, cfg: TrainConfig) -> torch.optim.Adam:
    """Adam (amsgrad) with weight decay, except for the gate's parameter group (weight decay 0)."""
    gate = [p for n, p in net.named_parameters() if n.startswith(GATE_PREFIX)]
    rest = [p for n, p in net.named_parameters() if not n.startswith(GATE_PREFIX)]
    groups = [{"params": rest}, {"params": gate, "weight_decay": 0.0}]
    return torch.optim.Adam(groups, lr=cfg.lr, betas=cfg.betas, weight_decay=cfg.weight_decay, amsgrad=cfg.amsgrad)


class EpochSampler(DistributedSampler):
    """DistributedSampler (a fresh shuffle per epoch, one shard per process) that can cap an epoch's samples."""

    def __init__(self, dataset: Dataset, info: DistInfo, seed: int, limit: int | None) -> None:
        super().__init__(dataset, num_replicas=info.world_size, rank=info.rank, shuffle=True, seed=seed)
        if limit is not None and limit < len(dataset):
            self.num_samples = math.ceil(limit / self.num_replicas)
            self.total_size = self.num_samples * self.num_replicas

    def __iter__(self):
        g = torch.Generator().manual_seed(self.seed + self.epoch)
        order = torch.randperm(len(self.dataset), generator=g).tolist()
        order = (order * math.ceil(self.total_size / len(order)))[:self.total_size]  # pad so every shard is full
        return iter(order[self.rank:self.total_size:self.num_replicas])


class Trainer:
    """Model, optimiser and target-model provider of one process; `train_batch` is one optimisation step.

    On construction it resumes from the latest checkpoint of `opts.name` (or applies --initPth or
    --finetune, read from `refiner_init` / `finetune` when the file was already read), then wraps the
    network for DistributedDataParallel when `info` is distributed. `settings`: what its checkpoints
    record (trainer/run_settings.py; made from `opts` when None).
    """

    def __init__(self, opts: TrainOptions, info: DistInfo, refiner_init: tuple[dict, dict] | None = None,
                 finetune: dict | None = None, settings: dict | None = None) -> None:
        cfg = opts.cfg
        self.opts, self.cfg, self.info = opts, cfg, info
        self.backbone = build_backbone(cfg.backbone, opts.backbone_weights, info.device)
        self.net = GFRTM(NetworkConfig(backbone=cfg.backbone)).to(info.device).train()
        self.optimizer = make_optimizer(self.net, cfg)
        self.scheduler = StepLR(self.optimizer, step_size=cfg.lr_step, gamma=cfg.lr_gamma)
        self.cache = TargetModelCache(opts.paths.tmcache, cfg.backbone, cfg.target_model, opts.tmcache_readonly)
        self.provider = TargetModelProvider(self.backbone, cfg.target_model, self.cache, cfg.feature_chunk, cfg.seed)
        self.last_checkpoint: Path | None = latest_checkpoint(opts.paths.checkpoints, opts.name)
        self.settings = settings if settings is not None or not info.is_main else training_settings(opts)
        self.start_epoch = self._restore(refiner_init, finetune)
        self.forward = wrap(SequenceForward(self.net), info)
        self.last_sample: tuple[Tensor, ...] | None = None  # sample 0 of the last batch, for the image grid

    def _restore(self, refiner_init: tuple[dict, dict] | None, finetune: dict | None) -> int:
        if self.last_checkpoint is not None:
            resumed = resume(self.last_checkpoint, self.net, self.optimizer, self.scheduler, self.cfg.backbone,
                             self.opts.backbone_weights)
            if self.settings is not None:
                self.settings = carried_over(resumed.settings, self.settings)
            self.say(f"resuming from {self.last_checkpoint} (epoch {resumed.epoch} done)")
            if self.opts.lr_given:  # without --lr the checkpoint's schedule goes on unchanged
                old = switch_initial_lr(self.optimizer, self.scheduler, self.cfg.lr)
                if old is not None:
                    self.say(f"--lr {self.cfg.lr:g} replaces the checkpoint's initial lr {old:g}; the current lr "
                             f"is now {self.optimizer.param_groups[0]['lr']:g} (same point of the StepLR schedule)")
            for flag, path in (("--initPth", self.opts.init_pth), ("--finetune", self.opts.finetune)):
                if path:
                    self.say(f"{flag} {path} ignored: the run resumes from a checkpoint")
            return resumed.epoch + 1
        if self.opts.finetune:
            state = finetune if finetune is not None else read_finetune(self.opts.finetune, self.cfg.backbone,
                                                                        self.opts.backbone_weights)
            self.net.load_state_dict(state, strict=True)
            self.say(f"--finetune {self.opts.finetune}: the gate, template matching, delta generator and refinement "
                     f"network start from its weights; the optimiser and the learning-rate schedule start fresh "
                     f"at epoch 1")
            if self.cfg.margin_epochs > 0:
                self.say(f"note: --marginEp {self.cfg.margin_epochs} ramps the gate's reuse target up from 0 again, "
                         f"so the fine-tuned gate first learns to compute; --marginEp 0 keeps the reuse it learnt")
        if self.opts.init_pth:
            report = load_refiner_init(self.opts.init_pth, self.net, self.cfg.backbone, refiner_init)
            self.say(report.summary(self.opts.init_pth))
        return 1

    def train_batch(self, batch: dict, epoch: int) -> dict[str, Tensor]:
        """One optimisation step on a collated batch; returns the detached outputs of `forward_sequence`."""
        device = self.info.device
        images = batch["images"].to(device, non_blocking=True)
        labels = batch["labels"].to(device, non_blocking=True).float()
        feats = frozen_features(self.backbone, images)
        # the cache names a sample by its first frame's file number, not its list position
        models = self.provider(images[:, 0], labels[:, 0], batch["sequence"], batch["frame_numbers"][:, 0].tolist(),
                               batch["object_id"].tolist())
        scores = target_scores(models, feats)
        out = self.forward(feats, scores, labels, reuse_margin(epoch, self.cfg.m1, self.cfg.margin_epochs),
                           self.cfg.m2)
        finite = bool(torch.isfinite(out["loss"]).item())
        if not distributed.all_true(finite, self.info):
            raise TrainingError(self._non_finite_message(
                batch, epoch, "loss", f"loss {float(out['loss'].detach())}" if not finite else None))
        self.optimizer.zero_grad(set_to_none=True)
        out["loss"].backward()
        bad = self._non_finite_gradients()
        if not distributed.all_true(not bad, self.info):  # every rank skips the step, or none does
            self.optimizer.zero_grad(set_to_none=True)
            more = f" and {len(bad) - 3} more parameters" if len(bad) > 3 else ""
            detail = f"in {', '.join(bad[:3])}{more}" if bad else None
            raise TrainingError(self._non_finite_message(batch, epoch, "gradients", detail))
        self.optimizer.step()
        self.last_sample = (batch["images"][0], batch["labels"][0], out["masks"][0], out["diffs"][0],
                            out["decisions"][0])
        return {k: v.detach() for k, v in out.items()}

    def train_epoch(self, loader: DataLoader, epoch: int) -> dict[str, float]:
        """All batches of one epoch; returns the epoch's stats averaged over samples of all processes."""
        sums = dict.fromkeys(LOSS_KEYS, 0.0)
        count = 0
        hits, misses = self.cache.hits, self.cache.misses
        with held_signals():  # the workers are forked now: see held_signals
            batches = iter(loader)
        # `with`: an error or Ctrl-C clears the bar before the message that ends the run
        with tqdm(batches, total=len(loader), desc=f"epoch {epoch}/{self.cfg.max_epochs}",
                  disable=not self.info.is_main, dynamic_ncols=True, leave=False) as bar:
            for batch in bar:
                out = self.train_batch(batch, epoch)
                n = batch["images"].shape[0]
                for key, value in zip(LOSS_KEYS, torch.stack([out[k] for k in LOSS_KEYS]).tolist()):  # one sync
                    sums[key] += value * n
                count += n
                bar.set_postfix({k: f"{sums[k] / count:.3f}" for k in ("loss", "seg", "delta", "gate", "iou")}
                                | {"reuse": f"{sums['reuse_rate'] / count:.2f}"})
                raise_if_interrupted()  # a Ctrl-C that arrived inside a finalizer stops the run here
        totals = distributed.all_sum({**sums, "count": count, "tm_cache_hits": self.cache.hits - hits,
                                      "tm_cache_misses": self.cache.misses - misses}, self.info)
        total = max(totals["count"], 1.0)
        stats = {key: totals[key] / total for key in LOSS_KEYS}
        stats |= {"lr": self.optimizer.param_groups[0]["lr"], "samples": totals["count"],
                  "tm_cache_hits": totals["tm_cache_hits"], "tm_cache_misses": totals["tm_cache_misses"]}
        self.scheduler.step()
        return stats

    def save(self, epoch: int, stats: dict[str, float]) -> Path:
        """Write the epoch's checkpoint (atomically), then apply --keep-last to the older ones."""
        path = checkpoint_path(self.opts.paths.checkpoints, self.opts.name, epoch)
        save_training_checkpoint(path, self.net, self.optimizer, self.scheduler, self.opts.name, epoch, stats,
                                 self.opts.backbone_weights, self.settings)
        self.last_checkpoint = path
        if self.opts.keep_last is not None:  # only now: the new checkpoint is complete and in place
            prune_checkpoints(self.opts.paths.checkpoints, self.opts.name, self.opts.keep_last, epoch)
        return path

    def _non_finite_gradients(self) -> list[str]:
        """Names of the parameters whose gradient holds a NaN or an infinity (one device sync)."""
        named = [(name, p.grad) for name, p in self.net.named_parameters() if p.grad is not None]
        if not named:
            return []
        finite = torch.stack([torch.isfinite(grad).all() for _, grad in named]).tolist()
        return [name for (name, _), ok in zip(named, finite) if not ok]

    def _non_finite_message(self, batch: dict, epoch: int, what: str, detail: str | None) -> str:
        """`detail` describes this process's failure; None when only another process's batch failed."""
        if detail is None:
            where = "in another process's batch"
        else:
            samples = [f"{seq} object {int(oid)} frames {numbers.tolist()}" for seq, oid, numbers in
                       zip(batch["sequence"], batch["object_id"], batch["frame_numbers"])]
            where = f"({detail}) on the batch of " + "; ".join(samples)
        if self.last_checkpoint is None:
            again = "no checkpoint was written yet, so a new run starts from scratch"
        else:
            again = f"a new run resumes from the last good checkpoint {self.last_checkpoint}, which is kept"
        return (f"non-finite {what} at epoch {epoch} {where}; training stopped before the optimiser step. "
                f"Check those samples (frames are annotation file numbers), or pass a lower --lr (a resumed run "
                f"switches to it) and run again: {again}")

    def say(self, text: str) -> None:
        if self.info.is_main:
            tqdm.write(text)


def run_training(opts: TrainOptions, validator: Validator | None = None) -> list[dict[str, float]]:
    """Train from the latest checkpoint of `opts.name` to `cfg.max_epochs`; returns the epochs' stats (rank 0).

    validator: scores the due epochs' checkpoints (needed with --val-dset; see trainer/epoch_validation.py).
    """
    if (opts.validation is None) != (validator is None):
        raise ValueError("run_training: pass a validator exactly when opts.validation (--val-dset) is set")
    info = distributed.setup(opts.device)
    created = missing_folders(*run_folders(opts)) if info.is_main else []  # rank 0 alone makes folders
    try:
        return _train(opts, info, validator)
    except BaseException:  # an error or an interrupt: the folders it made and left empty go again
        remove_empty_folders(created)
        raise
    finally:
        distributed.teardown(info)


def run_folders(opts: TrainOptions) -> list[Path]:
    """The folders a run creates: its checkpoint and TensorBoard folders, the cache, the generated videos."""
    folders = [opts.paths.checkpoints / opts.name, opts.paths.tensorboard / opts.name, opts.paths.tmcache,
               opts.dataset_stats_dir]
    if opts.cfg.dset == "synthetic":
        folders.append(opts.synthetic_root)
    if opts.validation is not None and opts.validation.dset == "demo":
        folders.append(opts.validation.root)
    return folders


def check_before_training(opts: TrainOptions, world_size: int) -> None:
    """Everything that can go wrong with the flags and folders, found before data generation and the model build."""
    cfg = opts.cfg
    if cfg.batch_size % world_size:
        raise TrainingError(f"--batch-size {cfg.batch_size} does not divide among {world_size} processes; "
                            f"pass a multiple of {world_size}")
    check_dataset_roots(opts)
    check_writable(opts.paths.checkpoints / opts.name, "--checkpoints")
    check_writable(opts.paths.tensorboard / opts.name, "--tensorboard")
    cache = TargetModelCache(opts.paths.tmcache, cfg.backbone, cfg.target_model, opts.tmcache_readonly)
    if opts.tmcache_readonly:
        check_read_only_cache(opts.paths.tmcache, cache.folder)
    else:
        check_writable(opts.paths.tmcache, "--tmcache")
    # the videos are generated unless a finished synthetic dataset is already there (which is only read)
    if cfg.dset == "synthetic" and not (opts.synthetic_root / MANIFEST).is_file():
        check_writable(opts.synthetic_root, "--synthetic-root")
    if opts.validation is not None:
        check_validation_root(opts.validation)
    cache.check_info(training_cache_info(opts), write=False)  # recorded once the data is accepted (_train)


def record_cache_index(opts: TrainOptions) -> None:
    """Write the cache index of this run into a cache that has none (once the training data is accepted)."""
    cfg = opts.cfg
    cache = TargetModelCache(opts.paths.tmcache, cfg.backbone, cfg.target_model, opts.tmcache_readonly)
    cache.check_info(training_cache_info(opts), write=True)


def training_cache_info(opts: TrainOptions) -> dict:
    """The cache index record of this run (see tm_cache.cache_info)."""
    cfg = opts.cfg
    synthetic = None
    if cfg.dset == "synthetic":
        synthetic = {"videos": cfg.synthetic_videos, "frames": cfg.synthetic_frames, "seed": cfg.synthetic_seed,
                     "size": list(cfg.image_size), "max_objects": cfg.synthetic_max_objects}
    info = cache_info(cfg.backbone, opts.backbone_weights, cfg.target_model, cfg.image_size, synthetic)
    if cfg.dset == "folder":  # one's own sequence names (video1, ...) would otherwise meet other folders' models
        info["folder_root"] = str(opts.paths.folder_root.resolve())
    return info


def _train(opts: TrainOptions, info: DistInfo, validator: Validator | None = None) -> list[dict[str, float]]:
    cfg = opts.cfg
    refiner_init = finetune = None
    resuming = latest_checkpoint(opts.paths.checkpoints, opts.name) is not None
    if opts.init_pth is not None and not resuming:
        # read once, first: a damaged or refused file fails the run before anything is made
        refiner_init = distributed.on_every_process(lambda: read_refiner_init(opts.init_pth, cfg.backbone), info)
    if opts.finetune is not None and not resuming:
        finetune = distributed.on_every_process(
            lambda: read_finetune(opts.finetune, cfg.backbone, opts.backbone_weights), info)
    say = tqdm.write if info.is_main else (lambda text: None)
    settings = distributed.on_main(lambda: training_settings(opts), info)

    def check_resume() -> None:
        check_dataset_roots(opts)  # a missing dataset or split file is named first, as a changed setting of it
        check_resume_settings(opts, settings, say)

    distributed.on_main(check_resume, info)
    validation = EpochValidation(opts, validator, info, say) if validator is not None else None
    if validation is not None:
        distributed.on_main(validation.check, info)  # reads only: a set that cannot be scored fails the run now
    # rank 0 checks (it alone writes checkpoints, logs and the cache index); all ranks stop together on an error
    distributed.on_main(lambda: check_before_training(opts, info.world_size), info)
    if validation is not None:
        validation.prepare()
    seed_everything(cfg.seed + info.rank)
    if info.device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    dataset = _training_set(opts, info)
    distributed.on_main(lambda: record_cache_index(opts), info)  # only now: a refused tree leaves no index behind

    trainer = Trainer(opts, info, refiner_init, finetune, settings)
    sampler = EpochSampler(dataset, info, cfg.seed, cfg.epoch_samples)
    loader = DataLoader(dataset, batch_size=cfg.batch_size // info.world_size, sampler=sampler,
                        num_workers=cfg.workers, pin_memory=info.device.type == "cuda", drop_last=False,
                        worker_init_fn=leave_signals_to_main)
    if info.is_main:  # a missing tensorboard package fails now, not after the first epoch
        importlib.import_module("torch.utils.tensorboard")
    logger = None  # made with the first checkpoint: a run that fails before it leaves no empty log folder behind

    def log() -> TrainLogger:
        nonlocal logger
        if logger is None:
            logger = TrainLogger(opts.paths.tensorboard, opts.name)
        return logger

    history = []
    try:
        if validation is not None:  # an epoch whose validation was cut short is validated before training on
            validation.catch_up(trainer.start_epoch - 1, log)
        if trainer.start_epoch > cfg.max_epochs:
            trainer.say(f"{opts.name}: epoch {trainer.start_epoch - 1} already done, nothing to train "
                        f"(raise --max-epochs to continue)")
        for epoch in range(trainer.start_epoch, cfg.max_epochs + 1):
            sampler.set_epoch(epoch)
            dataset.set_epoch(epoch)
            stats = trainer.train_epoch(loader, epoch)
            if info.is_main:
                path = trainer.save(epoch, stats)
                log().scalars(epoch, stats)
                if trainer.last_sample is not None:
                    logger.image_grid(epoch, sample_grid(*trainer.last_sample))
                trainer.say(f"epoch {epoch}: " + ", ".join(f"{k} {v:.4g}" for k, v in stats.items()) + f" -> {path}")
            distributed.barrier(info)
            history.append(stats)
            raise_if_interrupted()
            if validation is not None:  # after the barrier: every process can read the checkpoint now
                validation.after_epoch(epoch, log)
                raise_if_interrupted()
    finally:
        if logger is not None:
            logger.close()
    return history


def _training_set(opts: TrainOptions, info: DistInfo):
    """The training samples; --dset synthetic first generates its videos (rank 0, idempotent)."""
    cfg = opts.cfg
    davis_root = opts.paths.davis_root
    if cfg.dset == "synthetic":
        davis_root = opts.synthetic_root
        distributed.on_main(lambda: generate_dataset(
            davis_root, layout="davis", num_videos=cfg.synthetic_videos, num_frames=cfg.synthetic_frames,
            size=cfg.image_size, seed=cfg.synthetic_seed, max_objects=cfg.synthetic_max_objects, split="train"), info)
    build = lambda: build_training_set(cfg.dset, davis_root, opts.paths.ytvos_root, cfg,  # noqa: E731
                                       opts.dataset_stats_dir, split="train",
                                       ytvos_split_file=opts.paths.ytvos_split_file,
                                       folder_root=opts.paths.folder_root)
    dataset = distributed.on_main(build, info)  # rank 0 caches the pixel statistics: the others just read them
    return dataset if dataset is not None else build()


def leave_signals_to_main(worker_id: int) -> None:
    """DataLoader worker start: Ctrl-C and SIGTERM are the main process's to report; it stops its workers.

    A terminal's Ctrl-C reaches every process of the foreground group, and torchrun (like a batch
    system) signals each rank's whole process group, so the workers get the signal too. SIGINT is
    ignored: the worker prints nothing and waits for the main process's shutdown. SIGTERM ends the
    worker at once, as the default action would (the DataLoader's own `terminate()` relies on it),
    but with status 0: killed by a signal, the worker would make the DataLoader raise "worker killed
    by signal" over the main process's orderly stop. The worker was forked with both signals held
    back (`held_signals`), so none arrived before this point; they are let in now.
    """
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, _end_worker)
    unblock_signals()


def _end_worker(signum: int, frame) -> None:
    os._exit(0)  # no cleanup to do: the main process owns every file the worker reads


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)

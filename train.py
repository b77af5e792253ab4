"""Train G-FRTM: the reuse gate, template matching, delta generator and refinement network (docs/method.md, "Training").

    python train.py --ftext resnet18 --dset all --name rn18_all             # DAVIS 2017 + YouTube-VOS 2018
    python train.py --dset yt2018 --m1 0.5 --name rn18_ytvos
    python train.py --dset synthetic --backbone-weights none --size 224x128 --max-epochs 20   # CPU demo
    python train.py --dset folder --root my_videos --name mine              # your own videos (docs/own_data.md)
    python train.py --dset dv2017 --finetune weights/rn18_all.pth --marginEp 0 --lr 1e-4 --max-epochs 20 \
        --val-dset dv2017val --name rn18_ft                                 # fine-tune, validate each epoch
    torchrun --nproc_per_node=4 train.py --dset all --name rn18_all         # several GPUs (DDP)

A run resumes from the latest `<checkpoints>/<name>/<name>_ep*.pth`; Ctrl-C or SIGTERM stops it with a
line that names that checkpoint and the command that continues. Edit `paths` below for your machine;
the command-line flags override it.
"""
from __future__ import annotations

import sys

paths = {
    "dv2017": "/data/DAVIS",  # DAVIS 2017 trainval (JPEGImages/480p, Annotations/480p, ImageSets/2017)
    "ytvos2018": "/data/YouTubeVOS2018",  # YouTube-VOS 2018 (train/ with JPEGImages, Annotations, meta.json)
    "checkpoints": "checkpoints",
    "tensorboard": "tensorboard",
    "tmcache": "tmcache",  # fitted target models (and the generated synthetic videos under data/)
}


def main(argv: list[str] | None = None) -> int:
    """Train; Ctrl-C or SIGTERM stops with one line (the checkpoint a rerun resumes from, the command) and 130/143."""
    from lib.interrupts import exit_status, interrupted_line, sigterm_as_interrupt
    from trainer.interrupted import continue_command, interrupt_of, is_reporting_process, saved_text
    from trainer.signals import kept_across_finalizers

    parsed: dict = {}  # the options, once parsed: the message names their run's checkpoint
    with sigterm_as_interrupt(), kept_across_finalizers():
        try:
            return _main(argv, parsed)
        except BaseException as err:  # an interrupt (even one another error was raised over) ends quietly
            stop = interrupt_of(err)
            if stop is None:
                raise
    if is_reporting_process():
        print(interrupted_line(stop, saved_text(parsed.get("opts")), continue_command(argv)), file=sys.stderr)
    return exit_status(stop)


def _main(argv: list[str] | None, parsed: dict) -> int:
    from lib.interrupts import held_signals

    with held_signals():  # a Ctrl-C while torch is imported arrives once the import is complete
        from dataset.errors import DatasetError
        from models.backbone import BackboneWeightsError
        from models.checkpoint import CheckpointError
        from lib.distributed import PeerStopped
        from trainer.loop import run_training
        from trainer.options import TrainingError, parse_options
        from trainer.tm_cache import CacheMismatchError, TargetModelFitError
        from trainer.epoch_validation import masks_folder
        from evaluator.validation import CheckpointValidator, ValidationError, ValidationRequest

    opts = parsed["opts"] = parse_options(argv, paths)
    validator = None
    if opts.validation is not None:  # the evaluation side of validation, handed to the training loop
        val = opts.validation
        validator = CheckpointValidator(ValidationRequest(val.dset, val.root, val.thresholds, masks_folder(opts)))
    try:
        run_training(opts, validator)
    except (TrainingError, DatasetError, CheckpointError, BackboneWeightsError, CacheMismatchError,
            TargetModelFitError, ValidationError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except PeerStopped:
        return 2  # under torchrun: rank 0 printed the reason
    return 0


if __name__ == "__main__":
    sys.exit(main())

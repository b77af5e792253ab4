"""Train G-FRTM: the reuse gate, template matching, delta generator and refinement network (DESIGN 5).

    python train.py --ftext resnet18 --dset all --name rn18_all             # DAVIS 2017 + YouTube-VOS 2018
    python train.py --dset yt2018 --m1 0.5 --name rn18_ytvos
    python train.py --dset synthetic --backbone-weights none --size 224x128 --max-epochs 20   # CPU demo
    torchrun --nproc_per_node=4 train.py --dset all --name rn18_all         # several GPUs (DDP)

A run resumes from the latest `<checkpoints>/<name>/<name>_ep*.pth`. Edit `paths` below for your
machine; the command-line flags override it.
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
    from dataset.errors import DatasetError
    from models.backbone import BackboneWeightsError
    from models.checkpoint import CheckpointError
    from trainer.distributed import PeerStopped
    from trainer.loop import run_training
    from trainer.options import TrainingError, parse_options
    from trainer.tm_cache import CacheMismatchError, TargetModelFitError

    opts = parse_options(argv, paths)
    try:
        run_training(opts)
    except (TrainingError, DatasetError, CheckpointError, BackboneWeightsError, CacheMismatchError,
            TargetModelFitError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except PeerStopped:
        return 2  # under torchrun: rank 0 printed the reason
    return 0


if __name__ == "__main__":
    sys.exit(main())

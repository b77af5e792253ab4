"""Hyperparameters: the single source of truth (described in docs/method.md).

Every component reads its settings from one of these dataclasses. Where training and
inference differ, the dataclass has a `train()` and an `eval()` preset instead of two
copied dicts.
"""
from __future__ import annotations

from dataclasses import dataclass, replace

BACKBONES = ("resnet18", "resnet101")
SCHEDULES = ("batched", "reference")  # TrackerConfig.schedule

# FRTM feature names -> channels. layer1..layer3 are the shallow half,
# layer4 and layer5 the deep half.
FEATURE_CHANNELS: dict[str, dict[str, int]] = {
    "resnet18": {"layer1": 64, "layer2": 64, "layer3": 128, "layer4": 256, "layer5": 512},
    "resnet101": {"layer1": 64, "layer2": 256, "layer3": 512, "layer4": 1024, "layer5": 2048},
}
FEATURE_STRIDES = {"layer1": 4, "layer2": 4, "layer3": 8, "layer4": 16, "layer5": 32}
SHALLOW_LAYERS = ("layer1", "layer2", "layer3")
DEEP_LAYERS = ("layer4", "layer5")

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class TargetModelConfig:
    """FRTM's discriminative target model and its GN-CG optimiser."""

    c_channels: int = 96
    memory_size: int = 80
    num_aug: int = 5  # K: the original first frame plus K-1 augmentations
    filter_reg: tuple[float, float] = (1e-4, 1e-2)  # (project, filter)
    precond: tuple[float, float] = (1e-4, 1e-2)  # (project, filter)
    precond_lr: float = 0.1
    cg_forgetting_rate: float = 750
    train_skipping: int = 8
    learning_rate: float = 0.1
    pixel_weighting: str | None = "hinge"  # "hinge" or None
    target_influence: float = 0.1  # tf of the hinge weighting
    update_iters: tuple[int, ...] = (10,)
    init_iters: tuple[int, ...] = (5, 10, 10, 10, 10)
    min_px_count: int = 1  # an augmentation must keep at least this many object pixels
    min_update_px: int = 10  # a predicted mask needs this many pixels to enter memory
    hinge_min_px: int = 10  # hinge weighting: an object with fewer pixels counts as af = target_influence
    init_seed: int = 0  # seeds the uniform start weights of project/filter before fitting
    feature_layer: str = "layer4"
    # Corrections (a session's extension, docs/method.md "Sessions"): the corrected frames' samples are
    # pinned in memory with this part of the total weight (chosen among 0.5, 0.75, 0.9 on the correction
    # study's videos 0-7; evaluator/correction_study.py), and the filter is refitted with these iterations.
    trusted_share: float = 0.9
    correction_iters: tuple[int, ...] = (10, 10)

    @property
    def direction_forget_factor(self) -> float:
        """Divides the stored CG rho between optimiser runs."""
        return (1.0 - self.precond_lr) ** self.cg_forgetting_rate

    @classmethod
    def eval(cls, fast: bool = True) -> "TargetModelConfig":
        """Evaluation preset; `fast` (the published evaluation's default) shortens both GN-CG schedules."""
        cfg = cls()
        if fast:
            cfg = replace(cfg, init_iters=(5, 10, 10, 10), update_iters=(5,))
        return cfg

    @classmethod
    def train(cls) -> "TargetModelConfig":
        # docs/method.md, "Training", lists what differs; everything else keeps the eval value.
        return cls(
            c_channels=32,
            memory_size=20,
            num_aug=15,
            filter_reg=(1e-5, 1e-4),
            precond=(1e-5, 1e-4),
            cg_forgetting_rate=75,
            pixel_weighting=None,
        )


@dataclass(frozen=True)
class NetworkConfig:
    """Widths of template matching, gate and refinement network."""

    backbone: str = "resnet18"
    template_width: int = 64  # key, value and output widths of template matching
    refine_channels: int = 64  # oc
    score_channels: int = 1  # ic
    refine_layers: tuple[str, ...] = ("layer5", "layer4", "layer3", "layer2")
    deep_refine_layers: tuple[str, ...] = ("layer5", "layer4")
    gate_init_bias: tuple[float, float] = (0.1, 2.0)  # (reuse, compute) at training start

    def __post_init__(self) -> None:
        if self.backbone not in BACKBONES:
            raise ValueError(f"unknown backbone {self.backbone!r}; choose one of {', '.join(BACKBONES)}")

    @property
    def channels(self) -> dict[str, int]:
        return FEATURE_CHANNELS[self.backbone]


@dataclass(frozen=True)
class TrackerConfig:
    """Inference settings (docs/method.md, "Tracking")."""

    tau: float = 0.7  # an object reuses iff p[reuse] > tau
    # The short target-model schedule. The published evaluation script always ran it (its `--fast`
    # flag was parsed as type=bool with default True), so every published figure used it.
    fast: bool = True
    amp: bool = False
    aug_seed: int = 0  # seeds the first-frame augmentation of every object
    feature_chunk: int = 4  # augmented images per backbone call when fitting a target model
    # Speed settings; none changes the masks beyond float rounding (tests/test_speed_paths.py).
    schedule: str = "batched"  # "batched": objects share the work; "reference": the published per-object loop
    channels_last: bool = True  # NHWC tensors for the backbone and the network (measured faster on the CPU)
    score_space_update: bool = True  # target-model updates solved at the score resolution (exact)
    cpu_refine_batch: int = 1  # objects per shallow-refinement call on the CPU (larger measured slower); CUDA: all
    prefetch_frames: int = 4  # frames an evaluation run decodes ahead in a background thread
    # replaces the evaluation target-model preset (tests only: e.g. a shorter train_skipping)
    target_model_override: TargetModelConfig | None = None

    def __post_init__(self) -> None:
        if self.schedule not in SCHEDULES:
            raise ValueError(f"TrackerConfig.schedule must be one of {', '.join(SCHEDULES)}, got {self.schedule!r}")
        if self.cpu_refine_batch < 1 or self.prefetch_frames < 1:
            raise ValueError(f"TrackerConfig: cpu_refine_batch ({self.cpu_refine_batch}) and prefetch_frames "
                             f"({self.prefetch_frames}) must be at least 1")

    @property
    def target_model(self) -> TargetModelConfig:
        return self.target_model_override or TargetModelConfig.eval(fast=self.fast)


@dataclass(frozen=True)
class TrainConfig:
    """Training settings (docs/method.md, "Training")."""

    backbone: str = "resnet18"
    dset: str = "all"
    max_epochs: int = 260
    batch_size: int = 8
    seq_len: int = 6  # N frames per sample
    image_size: tuple[int, int] = (480, 854)  # (H, W)
    lr: float = 5e-4
    betas: tuple[float, float] = (0.9, 0.999)
    weight_decay: float = 1e-5
    amsgrad: bool = True
    lr_step: int = 127
    lr_gamma: float = 0.1
    m1: float = 1.0
    m2: float = 0.0
    margin_epochs: int = 120
    davis_repeats: int = 8  # every DAVIS (sequence, object) this many times per epoch
    ytvos_samples: int = 4000  # random YouTube-VOS (sequence, object) pairs per epoch
    min_visible_px: int = 100
    min_visible_fraction: float = 0.25
    workers: int = 4
    seed: int = 0
    epoch_samples: int | None = None  # cap on samples per epoch for quick runs; None = the full epoch
    feature_chunk: int = 4  # augmented images per backbone call when fitting a target model
    # --dset synthetic: the generated training videos (seeds below the demo's held-out 1000+)
    synthetic_videos: int = 24
    synthetic_frames: int = 30
    synthetic_max_objects: int = 3
    synthetic_seed: int = 1
    # replaces the training target-model preset (tests and quick runs only: fewer augmentations/iterations)
    target_model_override: TargetModelConfig | None = None

    @property
    def target_model(self) -> TargetModelConfig:
        return self.target_model_override or TargetModelConfig.train()


@dataclass(frozen=True)
class OverlayConfig:
    """Look of the overlay videos (evaluate.py --save-overlays, demo.py)."""

    alpha: float = 0.5  # weight of the object's palette colour where it is blended over the frame
    fps: float = 12.0  # frame rate of dataset overlays (datasets carry none; demo.py uses the input's)
    gif_stride: int = 1  # the GIF keeps every n-th frame (the MP4 keeps all)
    gif_max_side: int = 360  # the GIF is downscaled so that its longer side is at most this many pixels
    gif_colors: int = 64  # colours of each GIF frame's adaptive palette (fewer: smaller file)

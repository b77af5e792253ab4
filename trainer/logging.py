"""TensorBoard output of a training run: per-epoch scalars and an image grid of one sample."""
from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor
from torchvision.utils import make_grid

GRID_WIDTH = 192  # tile width of the image grid, in pixels
REUSE_TINT = (0.2, 0.9, 0.2)
FULL_TINT = (0.9, 0.2, 0.2)
FIRST_TINT = (0.6, 0.6, 0.6)


class TrainLogger:
    """Writes `<tensorboard>/<name>`: scalars under 'train/...', the grid under 'train/sample' and the
    validation scores under 'val/...'."""

    def __init__(self, folder: str | Path, name: str) -> None:
        from torch.utils.tensorboard import SummaryWriter  # imported late: it is slow and rank 0 only

        self.folder = Path(folder) / name
        self.writer = SummaryWriter(log_dir=str(self.folder))

    def scalars(self, epoch: int, stats: dict[str, float]) -> None:
        for key, value in stats.items():
            self.writer.add_scalar(f"train/{key}", value, epoch)
        self.writer.flush()

    def image_grid(self, epoch: int, grid: Tensor) -> None:
        self.writer.add_image("train/sample", grid, epoch)
        self.writer.flush()

    def validation(self, epoch: int, rows: list[dict[str, float]]) -> None:
        """One validated epoch: per threshold, `val/J&F_TH<TH>`, `val/J_TH<TH>`, `val/F_TH<TH>` and
        `val/reuse_rate_TH<TH>` (e.g. `val/J&F_TH1`, `val/reuse_rate_TH0.7`)."""
        for row in rows:
            for key in ("J&F", "J", "F", "reuse_rate"):
                self.writer.add_scalar(f"val/{key}_TH{row['TH']:g}", row[key], epoch)
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()


def sample_grid(images: Tensor, labels: Tensor, masks: Tensor, diffs: Tensor, decisions: Tensor) -> Tensor:
    """One sample as a (3,H',W') float grid in [0,1]: a column per frame, rows frames, label, prediction,
    Diff (grey = 0, white = +1, black = -1) and gate decision (green reuse, red full path, grey frame 0).

    Args:
        images: (N,3,H,W) uint8; labels: (N,1,H,W); masks: (N-1,1,H,W) probabilities of frames 1..N-1;
        diffs: (N-1,1,h,w); decisions: (N-1,) 1 = reuse.
    """
    images, labels, masks, diffs, decisions = (t.detach().cpu() for t in (images, labels, masks, diffs, decisions))
    n, _, h, w = images.shape
    size = (max(1, round(h * GRID_WIDTH / w)), GRID_WIDTH)
    frames = _resize(images.float() / 255, size)
    label_rgb = _resize(labels.float(), size).expand(-1, 3, -1, -1)
    pred = torch.cat([labels[:1].float(), masks.float()])  # frame 0 shows its given mask
    pred_rgb = _resize(pred, size).expand(-1, 3, -1, -1)
    diff = torch.cat([torch.zeros_like(diffs[:1]), diffs.float()])
    diff_rgb = (0.5 + 0.5 * _resize(diff, size, mode="nearest").clamp(-1, 1)).expand(-1, 3, -1, -1)
    tints = [FIRST_TINT] + [REUSE_TINT if d > 0.5 else FULL_TINT for d in decisions.tolist()]
    tint = torch.tensor(tints, dtype=frames.dtype).view(n, 3, 1, 1)
    gate_rgb = 0.5 * frames + 0.5 * tint
    tiles = torch.cat([frames, label_rgb, pred_rgb, diff_rgb, gate_rgb])
    return make_grid(tiles, nrow=n, padding=2, pad_value=1.0)


def _resize(x: Tensor, size: tuple[int, int], mode: str = "bilinear") -> Tensor:
    if mode == "nearest":
        return F.interpolate(x, size=size, mode=mode)
    return F.interpolate(x, size=size, mode=mode, align_corners=False)

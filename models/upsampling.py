"""The refinement network's resizings: bilinear resize, the bicubic 2x pyramid step, and the
Upsampler's last step (the 9 tap maps of its 3x3 conv resized to image size and added with their shifts).

Inference runs them in the forms the CPU runs fastest, each the same function as the plain one up to
float rounding (tests/test_fast_refine_merge.py compares them); autograd always records the plain ones.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import torch
import torch.nn.functional as F
from torch import Tensor

CUBIC_A = -0.75  # the bicubic kernel of the pyramid upsampling (PyTorch's and OpenCV's)
TAP_SHIFTS = (-1, 0, 1)  # offsets of a 3x3 conv's taps along each axis; tap k = (dy+1)*3 + (dx+1)
# Output rows (columns) per block of the banded products in TapResize; measured on the CPU.
ROW_BLOCK = 16
COLUMN_BLOCK = 16


def resize(x: Tensor, size) -> Tensor:
    """Bilinear (align_corners=False) resize of (B,C,h,w) to `size`; a no-op when the size already matches."""
    size = tuple(size)
    if tuple(x.shape[-2:]) == size:
        return x
    return F.interpolate(x, size=size, mode="bilinear", align_corners=False)


def _recording(x: Tensor) -> bool:
    """True when autograd records operations on x (training): only then are plain forms required."""
    return torch.is_grad_enabled() and x.requires_grad


def _cubic_taps(t: float) -> tuple[float, float, float, float]:
    """Weights of the 4 input samples around a position with fraction t, cubic convolution a = -0.75."""
    a = CUBIC_A

    def near(d: float) -> float:  # |d| <= 1
        return ((a + 2) * d - (a + 3)) * d * d + 1

    def far(d: float) -> float:  # 1 < |d| < 2
        return ((a * d - 5 * a) * d + 8 * a) * d - 4 * a

    return far(t + 1), near(t), near(1 - t), far(2 - t)


# 2x with half-pixel centres: output 2i samples input i - 0.25 (taps i-2..i+1), output 2i+1 samples
# i + 0.25 (taps i-1..i+2).
EVEN_TAPS = _cubic_taps(0.75)
ODD_TAPS = _cubic_taps(0.25)
PHASE_TAPS = (EVEN_TAPS, ODD_TAPS)


def _transposed_kernel_1d() -> Tensor:
    """(8,) kernel of a stride-2 transposed convolution that interleaves the two phases:
    output o gets input i with weight k[o + 7 - 2i] (see `pyramid_upsample2x`)."""
    k = torch.zeros(8, dtype=torch.float64)
    k[7], k[5], k[3], k[1] = EVEN_TAPS
    k[6], k[4], k[2], k[0] = ODD_TAPS
    return k


UPSAMPLE_KERNEL_1D = _transposed_kernel_1d()


@lru_cache(maxsize=32)
def _transposed_kernel(channels: int, dtype: torch.dtype, device: torch.device) -> Tensor:
    """(channels, 1, 8, 8) weight of the transposed convolution, built once per channel count, dtype and device."""
    with torch.inference_mode(False):  # an ordinary tensor: the cache outlives the inference_mode that asked
        k = UPSAMPLE_KERNEL_1D.to(device=device)
        return (k[:, None] * k[None, :]).to(dtype).expand(channels, 1, 8, 8).contiguous()


@lru_cache(maxsize=32)
def _phase_kernels(channels: int, dtype: torch.dtype, device: torch.device) -> tuple[tuple[int, int, Tensor], ...]:
    """(row phase, column phase, (channels, 1, 4, 4) depthwise weight) of the 4 output phases."""
    with torch.inference_mode(False):
        taps = [torch.tensor(t, dtype=torch.float64, device=device) for t in PHASE_TAPS]
        return tuple((py, px, (taps[py][:, None] * taps[px][None, :]).to(dtype).expand(channels, 1, 4, 4).contiguous())
                     for py in (0, 1) for px in (0, 1))


def _memory_format(x: Tensor) -> torch.memory_format:
    channels_last = x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous()
    return torch.channels_last if channels_last else torch.contiguous_format


def pyramid_upsample2x(x: Tensor) -> Tensor:
    """(B,C,h,w) -> (B,C,2h,2w) bicubic pyramid upsampling: cubic kernel a = -0.75, border replicated.

    F.interpolate's bicubic mode with align_corners=False computes exactly this (tests/test_network.py
    checks it against explicit taps); it runs when autograd records. Otherwise the same sums run over
    the border-replicated input, several times faster on the CPU, in one of two forms:
    - float32 (and any GPU): one depthwise stride-2 transposed convolution (the 4 taps of each output
      phase interleaved in an 8x8 kernel; padding 7 crops the replicated margin), the fastest form
      measured in float32;
    - bfloat16 and float16 on the CPU, where oneDNN runs that transposed convolution on a slow path
      (about 8x slower than in float32 on an AMX Xeon): each of the 4 output phases (even/odd row,
      even/odd column) as an ordinary depthwise 4x4 convolution, written into its interleaved place.
    The memory format of the input is kept.
    """
    if _recording(x):
        return F.interpolate(x, scale_factor=2, mode="bicubic", align_corners=False)
    channels = x.shape[1]
    padded = F.pad(x, (2, 2, 2, 2), mode="replicate")
    if x.dtype == torch.float32 or x.device.type != "cpu":
        kernel = _transposed_kernel(channels, x.dtype, x.device)
        return F.conv_transpose2d(padded, kernel, stride=2, padding=7, groups=channels)
    batch, _, height, width = x.shape
    out = torch.empty((batch, channels, 2 * height, 2 * width), dtype=x.dtype, device=x.device,
                      memory_format=_memory_format(x))
    for py, px, kernel in _phase_kernels(channels, x.dtype, x.device):
        # output 2i + py reads padded rows i + py .. i + py + 3 (input rows i - 2 + py .. i + 1 + py)
        phase = F.conv2d(padded, kernel, groups=channels)
        out[:, :, py::2, px::2] = phase[:, :, py:py + height, px:px + width]
    return out


# ------------------------------------------------------------------------------------------ tap maps
def shifted_resize_operator(length: int, size: int, shift: int) -> Tensor:
    """(size, length) float64 matrix of one axis of the Upsampler's last step, read `shift` pixels on.

    Row o holds the weights with which input samples make output sample o + shift of "pyramid 2x,
    then bilinear resize to `size`" (the very F.interpolate calls applied to unit vectors), and is
    zero where o + shift falls outside the image: the zero padding of the 3x3 conv at image size.
    """
    basis = torch.eye(length, dtype=torch.float64).view(length, 1, 1, length)
    up = F.interpolate(basis, scale_factor=(1, 2), mode="bicubic", align_corners=False)
    operator = resize(up, (1, size)).view(length, size).T
    shifted = torch.zeros_like(operator)
    lo, hi = max(0, -shift), size - max(0, shift)
    shifted[lo:hi] = operator[lo + shift:hi + shift]
    return shifted


@dataclass(frozen=True)
class _Band:
    """The three shifted operators of one axis, [A_-1, A_0, A_1], as blocks of a banded product.

    Outputs [b*block, (b+1)*block) read inputs [first + b*stride, first + b*stride + width) of each
    of the three shifted maps, with weights coefficients[b, o, m, s] (zero beyond the operators).
    The input is padded by `pad_before` and `pad_after` zeros so that every window lies inside it.
    """

    coefficients: Tensor  # (blocks, block, width, 3) float64
    first: int
    stride: int
    width: int
    pad_before: int
    pad_after: int

    @property
    def blocks(self) -> int:
        return self.coefficients.shape[0]

    @property
    def block(self) -> int:
        return self.coefficients.shape[1]

    @staticmethod
    def build(length: int, size: int, block: int) -> _Band:
        operators = torch.stack([shifted_resize_operator(length, size, s) for s in TAP_SHIFTS], dim=-1)
        blocks = -(-size // block)
        stride = max(1, round(block * length / size))
        spans = []  # (block index, first and last input read) of the blocks that read anything
        for b in range(blocks):
            used = operators[b * block:(b + 1) * block].abs().sum(dim=(0, 2)).nonzero()
            if len(used):
                spans.append((b, int(used[0]), int(used[-1])))
        first = min(lo - b * stride for b, lo, _ in spans)
        width = max(hi - (first + b * stride) for b, _, hi in spans) + 1
        coefficients = torch.zeros(blocks, block, width, len(TAP_SHIFTS), dtype=torch.float64)
        for b in range(blocks):
            start = first + b * stride
            rows = operators[b * block:(b + 1) * block]
            lo, hi = max(0, start), min(length, start + width)
            if lo < hi:
                coefficients[b, :len(rows), lo - start:hi - start] = rows[:, lo:hi]
        last = first + (blocks - 1) * stride + width
        return _Band(coefficients, first, stride, width, max(0, -first), max(0, last - length))


class TapResize:
    """The Upsampler's last step for one tap-map size and image size, as two banded matrix products.

    logits(i, j) = sum over taps (dy, dx) of [resize(pyramid2x(tap map))](i + dy, j + dx), zero outside
    the image. Along each axis "pyramid 2x, bilinear resize, read d pixels on" is a matrix with a few
    nonzeros per row: R_d (H x h) for rows, C_d (W x w) for columns. So logits = sum over dy of
    R_dy (sum over dx of T_dy,dx C_dx'), T being the tap maps: one product along the columns (the three
    dx maps of each row at once), then one along the rows (the three dy maps at once), each in blocks
    of outputs that read a window of inputs. Float32 throughout; the image-size logits are written once.
    """

    def __init__(self, tap_size: tuple[int, int], image_size: tuple[int, int], device: torch.device) -> None:
        self.tap_size, self.image_size = tap_size, image_size
        with torch.inference_mode(False):  # ordinary tensors: the cache outlives the inference_mode that asked
            self.rows = _Band.build(tap_size[0], image_size[0], ROW_BLOCK)
            self.columns = _Band.build(tap_size[1], image_size[1], COLUMN_BLOCK)
            rows, columns = self.rows.coefficients, self.columns.coefficients
            # rows: (blocks, block, width*3) against windows of (row, dy); columns: (blocks, width*3,
            # block) against windows of (column, dx)
            self.row_weights = rows.flatten(2).to(device, torch.float32)
            self.column_weights = columns.flatten(2).transpose(1, 2).contiguous().to(device, torch.float32)

    def __call__(self, taps: Tensor) -> Tensor:
        """taps (B,9,h,w), tap k = (dy+1)*3 + (dx+1) -> logits (B,1,H,W) float32, a view into a buffer
        with padded rows and columns.

        Few, large operations: each bmm is one call over all its blocks (per-block products, or a
        bmm writing into a strided output, start a parallel region per block on the CPU).
        """
        with torch.autocast(taps.device.type, enabled=False):  # float32 even inside an autocast region
            return self._resize(taps)

    def _resize(self, taps: Tensor) -> Tensor:
        batch = taps.shape[0]
        height, width = self.tap_size
        rows, columns = self.rows, self.columns
        padded_width = columns.pad_before + width + columns.pad_after
        # (B, row, dy, column, dx), zero-padded columns; the dtype becomes float32 in this copy
        x = taps.new_zeros((batch, height, 3, padded_width, 3), dtype=torch.float32)  # one memset beats strided fills
        x[:, :, :, columns.pad_before:columns.pad_before + width] = taps.unflatten(1, (3, 3)).permute(0, 3, 1, 4, 2)
        lines = batch * height * 3  # the rows (image, row, dy) of the column pass
        windows = x.as_strided((columns.blocks, lines, columns.width * 3), (columns.stride * 3, padded_width * 3, 1),
                               (columns.pad_before + columns.first) * 3)
        by_block = torch.bmm(windows, self.column_weights)  # (column blocks, lines, block)
        out_width = columns.blocks * columns.block
        padded_height = rows.pad_before + height + rows.pad_after
        z = x.new_empty((batch, padded_height, 3, out_width))
        z[:, :rows.pad_before] = 0
        z[:, rows.pad_before + height:] = 0
        inner = z[:, rows.pad_before:rows.pad_before + height]
        inner.view(batch, height * 3, columns.blocks, columns.block).copy_(
            by_block.view(columns.blocks, batch, height * 3, columns.block).permute(1, 2, 0, 3))
        out = x.new_empty((batch, 1, rows.blocks * rows.block, out_width))
        for i in range(batch):
            zi = z[i]
            windows = zi.as_strided((rows.blocks, rows.width * 3, out_width),
                                    (rows.stride * 3 * out_width, out_width, 1),
                                    zi.storage_offset() + (rows.pad_before + rows.first) * 3 * out_width)
            torch.bmm(self.row_weights, windows, out=out[i, 0].view(rows.blocks, rows.block, out_width))
        return out[:, :, :self.image_size[0], :self.image_size[1]]


@lru_cache(maxsize=16)
def tap_resize(tap_size: tuple[int, int], image_size: tuple[int, int], device: torch.device) -> TapResize:
    """The TapResize of these sizes, built once (a video keeps its sizes)."""
    return TapResize(tap_size, image_size, device)

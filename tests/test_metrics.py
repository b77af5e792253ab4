"""J, F and per-object statistics against hand-computed values (the DAVIS toolkit's arithmetic)."""
from __future__ import annotations

import math

import numpy as np
import pytest

from evaluator.metrics import (
    boundary_measure,
    boundary_tolerance_pixels,
    decay_bin_starts,
    disk,
    region_similarity,
    seg2bmap,
    statistics,
)


def square(shape: tuple[int, int], rows: tuple[int, int], cols: tuple[int, int]) -> np.ndarray:
    """Boolean mask with ones on rows[0]..rows[1] and cols[0]..cols[1] (inclusive)."""
    mask = np.zeros(shape, dtype=bool)
    mask[rows[0]:rows[1] + 1, cols[0]:cols[1] + 1] = True
    return mask


# ---------------------------------------------------------------- disk


def test_disk_radius_1_is_a_cross():
    expected = np.array([[0, 1, 0],
                         [1, 1, 1],
                         [0, 1, 0]], dtype=np.uint8)
    assert disk(1).dtype == np.uint8
    np.testing.assert_array_equal(disk(1), expected)


def test_disk_radius_2():
    # (y, x) with y^2 + x^2 <= 4: the corners (|y|,|x|) = (2,1), (1,2), (2,2) are out.
    expected = np.array([[0, 0, 1, 0, 0],
                         [0, 1, 1, 1, 0],
                         [1, 1, 1, 1, 1],
                         [0, 1, 1, 1, 0],
                         [0, 0, 1, 0, 0]], dtype=np.uint8)
    np.testing.assert_array_equal(disk(2), expected)


def test_disk_radius_3():
    # y^2 + x^2 <= 9: (3,0) in, (3,1) out (10), (2,2) in (8).
    expected = np.array([[0, 0, 0, 1, 0, 0, 0],
                         [0, 1, 1, 1, 1, 1, 0],
                         [0, 1, 1, 1, 1, 1, 0],
                         [1, 1, 1, 1, 1, 1, 1],
                         [0, 1, 1, 1, 1, 1, 0],
                         [0, 1, 1, 1, 1, 1, 0],
                         [0, 0, 0, 1, 0, 0, 0]], dtype=np.uint8)
    np.testing.assert_array_equal(disk(3), expected)


def test_disk_matches_scikit_image():
    morphology = pytest.importorskip("skimage.morphology")
    for r in range(1, 11):
        np.testing.assert_array_equal(disk(r), morphology.disk(r).astype(np.uint8), err_msg=f"radius {r}")


# ---------------------------------------------------------------- seg2bmap


def test_seg2bmap_interior_square_is_outline_shifted_up_left():
    # A square on rows/cols 1..2 marks the background pixels left of and above it and its own
    # last row and column: the outline of rows/cols 0..2.
    seg = square((4, 4), (1, 2), (1, 2))
    expected = np.array([[1, 1, 1, 0],
                         [1, 0, 1, 0],
                         [1, 1, 1, 0],
                         [0, 0, 0, 0]], dtype=bool)
    np.testing.assert_array_equal(seg2bmap(seg), expected)


def test_seg2bmap_bottom_right_pixel_uses_edge_rules():
    # General rule marks (1,1) via south-east, (1,2) via south, (2,1) via east. Last row: seg ^ east
    # = [0,0,1] ^ [0,1,0]; last column: seg ^ south = [0,0,1] ^ [0,1,0]; bottom-right forced to 0.
    seg = np.zeros((3, 3), dtype=np.uint8)
    seg[2, 2] = 1
    expected = np.array([[0, 0, 0],
                         [0, 1, 1],
                         [0, 1, 0]], dtype=bool)
    np.testing.assert_array_equal(seg2bmap(seg), expected)


def test_seg2bmap_full_and_empty_masks_have_no_boundary():
    assert not seg2bmap(np.ones((3, 3), dtype=bool)).any()
    assert not seg2bmap(np.zeros((3, 3), dtype=bool)).any()


def test_seg2bmap_treats_any_nonzero_as_foreground():
    labels = np.zeros((4, 4), dtype=np.uint8)
    labels[1:3, 1:3] = 7
    np.testing.assert_array_equal(seg2bmap(labels), seg2bmap(labels > 0))


# ---------------------------------------------------------------- J


def test_region_similarity_shifted_squares():
    gt = square((10, 10), (2, 5), (2, 5))  # 16 px
    pred = square((10, 10), (2, 5), (4, 7))  # 16 px, overlap cols 4..5 = 8 px, union 24
    assert region_similarity(gt, pred) == pytest.approx(8 / 24)


def test_region_similarity_empty_cases():
    empty = np.zeros((10, 10), dtype=bool)
    full = square((10, 10), (2, 5), (2, 5))
    assert region_similarity(empty, empty) == 1.0
    assert region_similarity(full, empty) == 0.0
    assert region_similarity(empty, full) == 0.0


def test_region_similarity_on_stacks_gives_one_value_per_frame():
    gt = np.stack([square((10, 10), (2, 5), (2, 5)), np.zeros((10, 10), bool), square((10, 10), (0, 0), (0, 1))])
    pred = np.stack([square((10, 10), (2, 5), (4, 7)), np.zeros((10, 10), bool), square((10, 10), (0, 0), (0, 0))])
    j = region_similarity(gt, pred)
    assert j.shape == (3,)
    np.testing.assert_allclose(j, [8 / 24, 1.0, 0.5])


# ---------------------------------------------------------------- F


def test_bound_pix_for_davis_480p_is_8():
    # ceil(0.008 * sqrt(480^2 + 854^2)) = ceil(7.837) = 8
    assert boundary_tolerance_pixels(480, 854) == 8
    assert boundary_tolerance_pixels(10, 10) == 1  # ceil(0.113)
    assert boundary_tolerance_pixels(480, 854, bound_th=3) == 3  # >= 1 means pixels


def test_boundary_measure_shifted_squares():
    # 10x10 -> tolerance 1 px, disk(1) is a cross (4-neighbourhood).
    # gt square rows/cols 2..5 -> boundary = outline of rows 1..5 x cols 1..5 (16 px).
    # pred = same square shifted right by 2 -> outline of rows 1..5 x cols 3..7 (16 px).
    # Precision: pred row 1 cols 3,4,5 lie on gt, col 6 touches (1,5), col 7 is 2 px away -> 4;
    # row 5 likewise -> 4; col 3 rows 2..4: (2,3) touches (1,3), (4,3) touches (5,3), (3,3) no -> 2;
    # col 7 rows 2..4 -> 0. P = 10/16. Recall is the mirror image: R = 10/16. F = 10/16.
    gt = square((10, 10), (2, 5), (2, 5))
    pred = square((10, 10), (2, 5), (4, 7))
    assert boundary_measure(gt, pred) == pytest.approx(10 / 16)


def test_boundary_measure_small_prediction_inside():
    # gt boundary: outline of rows/cols 1..5 (16 px). pred = pixel (3,3) -> boundary (2,2),(2,3),(3,2),(3,3).
    # Precision: (2,2),(2,3) touch row 1, (3,2) touches col 1, (3,3) touches nothing -> 3/4.
    # Recall: gt (1,2),(1,3),(2,1),(3,1) touch the pred boundary -> 4/16.
    # F = 2 * 0.75 * 0.25 / (0.75 + 0.25) = 0.375.
    gt = square((10, 10), (2, 5), (2, 5))
    pred = square((10, 10), (3, 3), (3, 3))
    assert boundary_measure(gt, pred) == pytest.approx(0.375)


def test_boundary_measure_empty_cases():
    empty = np.zeros((10, 10), dtype=bool)
    full = square((10, 10), (2, 5), (2, 5))
    assert boundary_measure(empty, empty) == 1.0  # P = R = 1
    assert boundary_measure(full, empty) == 0.0  # P = 1, R = 0
    assert boundary_measure(empty, full) == 0.0  # P = 0, R = 1


def test_boundary_measure_is_zero_when_nothing_matches():
    gt = square((20, 20), (1, 2), (1, 2))
    pred = square((20, 20), (14, 15), (14, 15))
    assert boundary_measure(gt, pred) == 0.0


def test_boundary_tolerance_at_480p_is_8_pixels():
    # The top half's only boundary is row 239 (last foreground row). A prediction 8 rows lower is
    # inside the radius-8 disk everywhere (F = 1); 9 rows lower is outside everywhere (F = 0).
    gt = np.zeros((480, 854), dtype=bool)
    gt[:240] = True
    within = np.zeros_like(gt)
    within[:248] = True
    beyond = np.zeros_like(gt)
    beyond[:249] = True
    assert boundary_measure(gt, within) == 1.0
    assert boundary_measure(gt, beyond) == 0.0


# ---------------------------------------------------------------- statistics


def test_decay_bin_edges():
    # T=4: linspace(1,4,5) = [1, 1.75, 2.5, 3.25, 4]; 2.5 + 1e-10 rounds up -> [1,2,3,3,4] - 1
    np.testing.assert_array_equal(decay_bin_starts(4), [0, 1, 2, 2, 3])
    np.testing.assert_array_equal(decay_bin_starts(10), [0, 2, 5, 7, 9])
    np.testing.assert_array_equal(decay_bin_starts(13), [0, 3, 6, 9, 12])
    assert decay_bin_starts(10).dtype == np.uint8


def test_statistics_t4():
    # bins v[0:2], v[1:3], v[2:3], v[2:4]; decay = mean(1.0, 0.8) - mean(0.4, 0.2) = 0.6
    mean, recall, decay = statistics(np.array([1.0, 0.8, 0.4, 0.2]))
    assert mean == pytest.approx(0.6)
    assert recall == pytest.approx(0.5)
    assert decay == pytest.approx(0.6)


def test_statistics_t10():
    # bins v[0:3] and v[7:10]; 0.5 itself is not above the recall threshold.
    v = np.array([1.0, 0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3, 0.2, 0.1])
    mean, recall, decay = statistics(v)
    assert mean == pytest.approx(0.55)
    assert recall == pytest.approx(0.5)
    assert decay == pytest.approx(0.9 - 0.2)


def test_statistics_t13():
    # bins v[0:4] (mean 0.9) and v[9:13] (mean 0.05)
    v = np.array([1, 1, 1, 0.6, 0.5, 0.5, 0.5, 0.5, 0.5, 0.2, 0, 0, 0])
    _, recall, decay = statistics(v)
    assert recall == pytest.approx(4 / 13)
    assert decay == pytest.approx(0.85)


def test_statistics_nan_frames():
    # mean ignores NaN; recall counts NaN as not above 0.5 (NaN > 0.5 is False) over all 4 frames;
    # decay bins v[0:2] = [nan, 1] -> 1 and v[2:4] = [0, nan] -> 0.
    mean, recall, decay = statistics(np.array([np.nan, 1.0, 0.0, np.nan]))
    assert mean == pytest.approx(0.5)
    assert recall == pytest.approx(0.25)
    assert decay == pytest.approx(1.0)


def test_statistics_all_nan_gives_nan_mean_without_warnings(recwarn):
    mean, _, decay = statistics(np.full(5, np.nan))
    assert math.isnan(mean) and math.isnan(decay)
    assert not [w for w in recwarn if issubclass(w.category, RuntimeWarning)]


def test_statistics_long_sequence_keeps_the_uint8_wrap():
    # T=300: edges [0, 75, 150, 224, 299] wrap to [0, 75, 150, 224, 43] as uint8, so the last bin
    # v[224:44] is empty and the toolkit's decay is NaN. Without the wrap it would be 1 - 0 = 1.
    np.testing.assert_array_equal(decay_bin_starts(300), [0, 75, 150, 224, 43])
    v = np.concatenate([np.ones(150), np.zeros(150)])
    mean, recall, decay = statistics(v)
    assert mean == pytest.approx(0.5) and recall == pytest.approx(0.5)
    assert math.isnan(decay)

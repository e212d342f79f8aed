"""Per-slice boxes from masks and label maps: hand-computed values."""

from __future__ import annotations

import numpy as np
import pytest

from organsam.priors import box_of_slice, boxes_from_labels, mask_to_boxes


def test_mask_to_boxes_hand_computed() -> None:
    m = np.zeros((4, 10, 12), bool)
    m[1, 2:5, 3:8] = True  # rows 2..4, cols 3..7
    m[3, 9, 0] = True  # a single pixel in the bottom-left corner
    assert mask_to_boxes(m, 0) == {1: (3, 2, 7, 4), 3: (0, 9, 0, 9)}
    # margin 2: (3-2, 2-2, 7+2, 4+2) and the corner pixel clipped to the image
    assert mask_to_boxes(m, 2) == {1: (1, 0, 9, 6), 3: (0, 7, 2, 9)}
    # a margin larger than the image clips to the whole slice (x1 = X-1 = 11, y1 = Y-1 = 9)
    assert mask_to_boxes(m, 50)[1] == (0, 0, 11, 9)


def test_mask_to_boxes_is_axis_correct_for_non_square_slices() -> None:
    m = np.zeros((1, 5, 20), bool)
    m[0, 4, 15:18] = True  # last row, columns 15..17
    assert mask_to_boxes(m, 1) == {0: (14, 3, 18, 4)}


def test_mask_to_boxes_min_pixels_and_empty() -> None:
    m = np.zeros((3, 6, 6), bool)
    m[0, 1, 1] = True
    m[2, 1:4, 1:4] = True
    assert list(mask_to_boxes(m, 0, min_pixels=2)) == [2]
    assert mask_to_boxes(np.zeros((3, 6, 6), bool), 10) == {}
    assert box_of_slice(np.zeros((6, 6), bool)) is None


def test_mask_to_boxes_rejects_bad_input() -> None:
    with pytest.raises(ValueError, match="3D"):
        mask_to_boxes(np.zeros((6, 6), bool), 0)
    with pytest.raises(ValueError, match="margin_px"):
        mask_to_boxes(np.zeros((2, 6, 6), bool), -1)
    with pytest.raises(ValueError, match="2D"):
        box_of_slice(np.zeros((2, 6, 6), bool))


def test_boxes_from_labels_merges_values_of_one_organ() -> None:
    lab = np.zeros((2, 8, 8), np.uint8)
    lab[0, 1:3, 1:3] = 5  # part 1 of "vertebrae"
    lab[0, 5:7, 4:6] = 6  # part 2 of "vertebrae"
    lab[1, 2, 2:7] = 9  # "liver", one row
    lab[1, 7, 7] = 4  # value not in the mapping: ignored
    out = boxes_from_labels(lab, {5: "vertebrae", 6: "vertebrae", 9: "liver"}, margin_px=0)
    assert out == {"vertebrae": {0: (1, 1, 5, 6)}, "liver": {1: (2, 2, 6, 2)}}
    # without a mapping every non-zero value is its own organ, named by its value
    assert set(boxes_from_labels(lab)) == {"4", "5", "6", "9"}

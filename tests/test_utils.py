"""Padding conversions against a plain numpy reference."""

import numpy as np
import pytest

import seqctc


@pytest.mark.parametrize("lengths,max_len", [([0, 3, 1], 3), ([5], 7), ([], 4)])
def test_lengths_to_paddings_matches_numpy(lengths, max_len):
    expected = np.array(
        [[1.0 if t >= n else 0.0 for t in range(max_len)] for n in lengths],
        dtype=np.float32,
    ).reshape(len(lengths), max_len)
    got = seqctc.lengths_to_paddings(np.asarray(lengths, np.int32), max_len)
    np.testing.assert_array_equal(np.asarray(got), expected)
    np.testing.assert_array_equal(
        np.asarray(seqctc.paddings_to_lengths(got)), np.asarray(lengths)
    )


def test_rank_errors_name_the_argument():
    with pytest.raises(ValueError, match="`lengths`"):
        seqctc.lengths_to_paddings(np.zeros((2, 2), np.int32), 3)
    with pytest.raises(ValueError, match="`paddings`"):
        seqctc.paddings_to_lengths(np.zeros((3,), np.float32))

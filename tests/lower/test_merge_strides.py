"""merge_strides: reading an epilogue operand over merged output dims (a conv's (oy, ox) as one
position) where that reads the same elements, and refusing where it would not."""
from ember.lower.indexing import merge_strides


def test_contiguous_and_broadcast_groups_merge():
    shape = (2, 64, 3, 3)
    assert merge_strides((576, 9, 3, 1), shape, (2, 64, 9)) == (576, 9, 1)    # same shape
    assert merge_strides((0, 1, 0, 0), shape, (2, 64, 9)) == (0, 1, 0)       # per-channel bias
    assert merge_strides((0, 0, 0, 0), shape, (1152,)) == (0,)               # a scalar


def test_a_group_half_broadcast_does_not_merge():
    shape = (2, 64, 3, 3)
    assert merge_strides((0, 1, 1, 0), shape, (2, 64, 9)) is None            # varies along y only
    assert merge_strides((576, 9, 3, 1), shape, (2, 64, 4)) is None          # not a coarsening

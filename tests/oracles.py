"""Plain numpy references shared by the tests (independent of seqctc)."""

import numpy as np


def log_softmax(x):
    """log_softmax over the last axis, in float64."""
    x = np.asarray(x, np.float64)
    m = np.max(x, axis=-1, keepdims=True)
    return x - m - np.log(np.sum(np.exp(x - m), axis=-1, keepdims=True))


def collapse(path, blank):
    """The CTC collapse: merge repeats, then drop blanks; a tuple of ints."""
    out, prev = [], None
    for k in path:
        if k != prev and k != blank:
            out.append(int(k))
        prev = k
    return tuple(out)


def sigmoid(a):
    return 1 / (1 + np.exp(-a))


def paddings(lengths, max_len):
    """``[B, T]`` float32 right paddings, 1.0 = padded."""
    lengths = np.asarray(lengths)
    return (np.arange(max_len)[None, :] >= lengths[:, None]).astype(np.float32)

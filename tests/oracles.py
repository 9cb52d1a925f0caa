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


def gru_step(w_ih, w_hh, b_ih, b_hh, h, x):
    """One GRU step in torch's convention (gates r, z, n; b_hn inside r * ...)."""
    hid = w_hh.shape[1]
    gi = x @ w_ih.T + b_ih
    gh = h @ w_hh.T + b_hh
    r = sigmoid(gi[..., :hid] + gh[..., :hid])
    z = sigmoid(gi[..., hid : 2 * hid] + gh[..., hid : 2 * hid])
    n = np.tanh(gi[..., 2 * hid :] + r * gh[..., 2 * hid :])
    return (1 - z) * n + z * h


def paddings(lengths, max_len):
    """``[B, T]`` float32 right paddings, 1.0 = padded."""
    lengths = np.asarray(lengths)
    return (np.arange(max_len)[None, :] >= lengths[:, None]).astype(np.float32)


def lstm_step(w_ih, w_hh, b_ih, b_hh, h, c, x):
    """One LSTM step in torch's convention (gates i, f, g, o); returns (h', c')."""
    hid = w_hh.shape[1]
    a = x @ w_ih.T + b_ih + h @ w_hh.T + b_hh
    i = sigmoid(a[..., :hid])
    f = sigmoid(a[..., hid : 2 * hid])
    g = np.tanh(a[..., 2 * hid : 3 * hid])
    o = sigmoid(a[..., 3 * hid :])
    c_new = f * c + i * g
    return o * np.tanh(c_new), c_new


def compact(values, paddings):
    """Moves each row's valid entries (padding 0) to the front, in order.

    Returns ``(values, paddings)`` right padded: the reference for "a padded
    position is skipped wherever it is". Padded slots of ``values`` are zeros.
    """
    values, paddings = np.asarray(values), np.asarray(paddings)
    out = np.zeros_like(values)
    lengths = np.sum(paddings == 0, axis=1)
    for b in range(values.shape[0]):
        kept = values[b][paddings[b] == 0]
        out[b, : len(kept)] = kept
    positions = np.arange(values.shape[1])[None, :]
    return out, (positions >= lengths[:, None]).astype(np.float32)


def padding_patterns(rng, batch, length):
    """``[B, L]`` paddings of mixed patterns: tails, heads, holes, all, none."""
    out = np.zeros((batch, length), np.float32)
    for b in range(batch):
        kind = b % 5
        cut = int(rng.integers(0, length + 1))
        if kind == 0:  # right padded
            out[b, cut:] = 1
        elif kind == 1:  # left padded
            out[b, : length - cut] = 1
        elif kind == 2:  # random holes
            out[b] = rng.random(length) < 0.3
        elif kind == 3 and b % 10 == 3:  # everything padded
            out[b] = 1
    return out

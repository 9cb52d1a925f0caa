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

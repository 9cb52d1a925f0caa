"""CTC against independent oracles.

Brute-force enumeration of every path (loss, α, β, γ), optax, torch, closed forms
(T == N, the α/β identity), finite differences and autodiff of a plain log-space
reference; padding invariance, bad values and static misuse.
"""

import contextlib
import functools
import itertools
import os
from unittest import mock

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import chex  # noqa: E402
import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import optax  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
from absl.testing import parameterized  # noqa: E402
from jax.test_util import check_grads  # noqa: E402
from oracles import paddings as _paddings  # noqa: E402

import seqctc  # noqa: E402
from seqctc import _ctc_loss  # noqa: E402

torch.set_num_threads(1)


# --------------------------------------------------------------------------
# Helpers and oracles.


def _softmax(x):
    x = np.asarray(x, np.float64)
    e = np.exp(x - np.max(x, axis=-1, keepdims=True))
    return e / np.sum(e, axis=-1, keepdims=True)


def _walk(state, seq, labels, blank):
    """States visited by ``seq`` from extended state ``state``; None if it leaves.

    A label state ``2c - 1`` has emitted ``c`` labels; a blank state ``2c`` too.
    """
    count = (state + 1) // 2
    prev = blank if state % 2 == 0 else labels[count - 1]
    out = []
    for k in seq:
        if k == blank:
            state = 2 * count
        elif not (k == prev and state % 2 == 1):
            if count >= len(labels) or labels[count] != k:
                return None
            count += 1
            state = 2 * count - 1
        prev = k
        out.append(state)
    return out


def _brute_force(logits, labels, blank):
    """Loss, α, β (probability space) and γ of one row by enumerating all paths."""
    y = _softmax(logits)  # [T, K]
    num_frames, num_classes = y.shape
    num_states = 2 * len(labels) + 1
    final = {num_states - 1, num_states - 2}
    alpha = np.zeros((num_frames, num_states))
    beta = np.zeros((num_frames, num_states))
    joint = np.zeros((num_frames, num_states))
    total = 0.0
    for path in itertools.product(range(num_classes), repeat=num_frames):
        prob = np.prod(y[np.arange(num_frames), path])
        states = _walk(0, path, labels, blank)
        # Prefix sums: the continuations of a prefix sum to 1, so α[t] is the
        # sum over full paths whose prefix up to t stays in the graph.
        for t in range(num_frames):
            prefix = _walk(0, path[: t + 1], labels, blank)
            if prefix is not None:
                alpha[t, prefix[-1]] += prob
        end = states[-1] if states else 0  # no frames: still in the start state
        if states is not None and end in final:
            total += prob
            joint[np.arange(num_frames), states] += prob
    for t in range(num_frames):
        for s in range(num_states):
            for suffix in itertools.product(
                range(num_classes), repeat=num_frames - 1 - t
            ):
                walked = _walk(s, suffix, labels, blank)
                end = s if not suffix else (walked[-1] if walked else None)
                if walked is not None and end in final:
                    frames = np.arange(t + 1, num_frames)
                    beta[t, s] += np.prod(y[frames, list(suffix)])
    gamma = joint / total if total > 0 else joint
    loss = -np.log(total) if total > 0 else np.inf
    return loss, alpha, beta, gamma


def _reference_loss(logits, logit_paddings, labels, label_paddings, blank_id=0):
    """A plain log-space forward recursion (transition-matrix form), in jnp.

    Differentiable by ordinary autodiff; rows are handled one by one in Python.
    """
    log_probs = jax.nn.log_softmax(logits, axis=-1)
    frame_lengths = np.sum(np.asarray(logit_paddings) == 0, axis=1)
    num_labels = np.sum(np.asarray(label_paddings) == 0, axis=1)
    big = -1e9  # log 0; finite so that autodiff stays finite
    losses = []
    for b in range(logits.shape[0]):
        ext = [blank_id]
        for label in np.asarray(labels)[b, : num_labels[b]].tolist():
            ext += [label, blank_id]
        size = len(ext)
        if frame_lengths[b] == 0:
            losses.append(jnp.asarray(0.0 if size == 1 else np.inf, jnp.float32))
            continue
        allowed = np.full((size, size), big)  # allowed[from, to]
        for s in range(size):
            allowed[s, s] = 0.0
            if s >= 1:
                allowed[s - 1, s] = 0.0
            if s >= 2 and ext[s] != blank_id and ext[s] != ext[s - 2]:
                allowed[s - 2, s] = 0.0
        alpha = jnp.asarray([0.0] + [big] * (size - 1))  # before frame 0
        alpha = jnp.asarray(alpha.at[1].set(0.0) if size > 1 else alpha)
        alpha = alpha + log_probs[b, 0, jnp.asarray(ext)]
        for t in range(1, int(frame_lengths[b])):
            alpha = jax.nn.logsumexp(alpha[:, None] + allowed, axis=0)
            alpha = alpha + log_probs[b, t, jnp.asarray(ext)]
        losses.append(-jax.nn.logsumexp(alpha[-2:] if size > 1 else alpha))
    return jnp.stack(losses)


def _random_batch(rng, batch, frames, classes, max_labels, *, feasible=True):
    logits = rng.normal(size=(batch, frames, classes)).astype(np.float32) * 2.0
    labels = rng.integers(1, classes, size=(batch, max_labels)).astype(np.int32)
    num_labels = rng.integers(0, max_labels + 1, size=batch)
    num_labels[0] = max_labels
    frame_lengths = np.empty(batch, np.int64)
    for b in range(batch):
        row = labels[b, : num_labels[b]]
        need = num_labels[b] + int(np.sum(row[1:] == row[:-1]))
        low = need if feasible else 0
        frame_lengths[b] = rng.integers(low, frames + 1)
    frame_lengths[0] = frames
    return (
        logits,
        _paddings(frame_lengths, frames),
        labels,
        _paddings(num_labels, max_labels),
    )


def _torch_loss(logits, logit_paddings, labels, label_paddings, **kwargs):
    """torch.nn.functional.ctc_loss on our layout; returns (loss, grad wrt logits)."""
    x = torch.tensor(np.asarray(logits, np.float32), requires_grad=True)
    log_probs = torch.log_softmax(x, dim=-1).transpose(0, 1)  # [T, B, K]
    frame_lengths = torch.tensor(np.sum(np.asarray(logit_paddings) == 0, axis=1))
    num_labels = torch.tensor(np.sum(np.asarray(label_paddings) == 0, axis=1))
    loss = torch.nn.functional.ctc_loss(
        log_probs,
        torch.tensor(np.asarray(labels, np.int64)),
        frame_lengths,
        num_labels,
        **kwargs,
    )
    loss.sum().backward()
    return loss.detach().numpy(), x.grad.numpy()


# --------------------------------------------------------------------------
# extend_with_blanks by hand.


def test_extend_with_blanks_by_hand():
    ext = seqctc.extend_with_blanks(
        np.array([[3, 3, 1, 9], [2, 0, 0, 0]]),
        np.array([[0.0, 0.0, 0.0, 1.0], [0.0, 1.0, 1.0, 1.0]]),
        blank_id=0,
    )
    np.testing.assert_array_equal(
        ext.states, [[0, 3, 0, 3, 0, 1, 0, 0, 0], [0, 2, 0, 0, 0, 0, 0, 0, 0]]
    )
    skip = np.zeros((2, 9), bool)
    skip[0, 5] = True  # 3 -> 1 may skip the blank; 3 -> 3 may not
    np.testing.assert_array_equal(ext.skip, skip)
    np.testing.assert_array_equal(ext.paddings, [[0] * 7 + [1] * 2, [0] * 3 + [1] * 6])


# --------------------------------------------------------------------------
# Brute force over every path.

# Rows: (frames T_b, labels as 1-based indices into the non-blank classes).
# T = 5, K = 3, N = 3.
_TINY_ROWS = [
    (5, [1, 1]),  # a repeat that needs a blank
    (5, [1, 2, 1]),
    (4, []),  # empty target
    (1, [2]),  # T_b = 1
    (3, [2, 2]),  # exactly feasible: a ε a
    (2, [1, 1]),  # infeasible: needs 3 frames
    (0, []),  # no frames, empty target: loss 0
    (0, [1]),  # no frames, one label: infeasible
]


def _tiny_batch(blank_id, seed=0):
    rng = np.random.default_rng(seed)
    frames, max_labels, classes = 5, 3, 3
    logits = rng.normal(size=(len(_TINY_ROWS), frames, classes)).astype(np.float32)
    labels = np.zeros((len(_TINY_ROWS), max_labels), np.int32)
    non_blank = [k for k in range(classes) if k != blank_id]
    rows = []
    for b, (t_b, row) in enumerate(_TINY_ROWS):
        row = [non_blank[v - 1] for v in row]
        labels[b, : len(row)] = row
        rows.append((t_b, row))
    frame_lengths = [t for t, _ in rows]
    num_labels = [len(r) for _, r in rows]
    return (
        logits,
        _paddings(frame_lengths, frames),
        labels,
        _paddings(num_labels, max_labels),
        rows,
    )


class BruteForceTest(chex.TestCase):
    @chex.variants(with_jit=True, without_jit=True)
    def test_loss_alpha_beta_gamma_match_enumeration(self):
        blank_id = 1  # neither the first nor the last class
        logits, lp, labels, lap, rows = _tiny_batch(blank_id)

        def tables(x):
            args = (x, lp, labels, lap)
            return (
                seqctc.ctc_loss(*args, blank_id=blank_id),
                seqctc.ctc_log_alpha(*args, blank_id=blank_id),
                seqctc.ctc_log_beta(*args, blank_id=blank_id),
                seqctc.ctc_posteriors(*args, blank_id=blank_id),
            )

        loss, alpha, beta, gamma = self.variant(tables)(logits)
        chex.assert_shape([alpha, beta, gamma], (len(rows), 5, 7))
        for b, (t_b, row) in enumerate(rows):
            want_loss, want_alpha, want_beta, want_gamma = _brute_force(
                logits[b, :t_b], row, blank_id
            )
            s_b = 2 * len(row) + 1
            if np.isinf(want_loss):
                self.assertEqual(float(loss[b]), np.inf)
            else:
                np.testing.assert_allclose(loss[b], want_loss, rtol=1e-5, atol=1e-6)
            np.testing.assert_allclose(
                np.exp(alpha[b, :t_b, :s_b]), want_alpha, rtol=1e-5, atol=1e-7
            )
            np.testing.assert_allclose(
                np.exp(beta[b, :t_b, :s_b]), want_beta, rtol=1e-5, atol=1e-7
            )
            np.testing.assert_allclose(
                gamma[b, :t_b, :s_b], want_gamma, rtol=1e-5, atol=1e-6
            )
            # Padding: large negative finite in α and β, exactly 0 in γ.
            for table in (alpha, beta):
                pad = np.concatenate(
                    [table[b, t_b:].ravel(), table[b, :, s_b:].ravel()]
                )
                self.assertTrue(np.all(np.isfinite(pad)) and np.all(pad <= -1e3))
            self.assertTrue(np.all(gamma[b, t_b:] == 0))
            self.assertTrue(np.all(gamma[b, :, s_b:] == 0))

    def test_neg_inf_logits_are_valid_input(self):
        logits, lp, labels, lap, rows = _tiny_batch(0, seed=1)
        logits[:, :, 2] = -np.inf  # class 2 is never emitted
        logits[0, 2, 1] = -np.inf  # and class 1 not at frame 2 of row 0

        @jax.jit
        def value_and_grad(x):
            loss = seqctc.ctc_loss(x, lp, labels, lap)
            grad = jax.grad(
                lambda x: seqctc.ctc_loss(x, lp, labels, lap, zero_infinity=True).sum()
            )(x)
            return loss, grad

        loss, grad = value_and_grad(logits)
        chex.assert_tree_all_finite(grad)
        for b, (t_b, row) in enumerate(rows):
            want, _, _, _ = _brute_force(logits[b, :t_b], row, 0)
            if np.isinf(want):
                self.assertEqual(float(loss[b]), np.inf)
                np.testing.assert_array_equal(grad[b], 0)
            else:
                np.testing.assert_allclose(loss[b], want, rtol=1e-5, atol=1e-6)
        self.assertTrue(np.isinf(loss[1]))  # class 2 is a label of row 1


# --------------------------------------------------------------------------
# optax and torch.


def _sum_value_and_grad(fn, *args, **kwargs):
    return jax.jit(jax.value_and_grad(lambda x: jnp.sum(fn(x, *args, **kwargs))))


class PeersTest(chex.TestCase):
    def test_equals_optax_values_gradients_and_identities(self):
        logits, lp, labels, lap = _random_batch(np.random.default_rng(1), 6, 24, 5, 7)
        args = (lp, labels, lap)

        @jax.jit
        def ours(x):
            (_, loss), grad = jax.value_and_grad(
                lambda x: (
                    jnp.sum(seqctc.ctc_loss(x, *args)),
                    seqctc.ctc_loss(x, *args),
                ),
                has_aux=True,
            )(x)
            tables = (
                seqctc.ctc_log_alpha(x, *args),
                seqctc.ctc_log_beta(x, *args),
                seqctc.ctc_posteriors(x, *args),
            )
            return loss, grad, tables

        @jax.jit
        def theirs(x):
            (_, loss), grad = jax.value_and_grad(
                lambda x: (jnp.sum(optax.ctc_loss(x, *args)), optax.ctc_loss(x, *args)),
                has_aux=True,
            )(x)
            return loss, grad

        loss, grad, (alpha, beta, gamma) = ours(logits)
        want, want_grad = theirs(logits)
        np.testing.assert_allclose(loss, want, rtol=1e-5)
        np.testing.assert_allclose(grad, want_grad, rtol=1e-4, atol=2e-6)
        self.assertTrue(np.all(np.asarray(loss) >= 0))
        # logsumexp_s(α[t] + β[t]) = log p on every valid frame; γ sums to 1.
        valid = lp == 0
        log_p = jax.nn.logsumexp(alpha + beta, axis=-1)  # [B, T]
        want = np.broadcast_to(-np.asarray(want)[:, None], log_p.shape)
        np.testing.assert_allclose(log_p[valid], want[valid], rtol=1e-5)
        np.testing.assert_allclose(jnp.sum(gamma, axis=-1)[valid], 1.0, atol=1e-4)
        np.testing.assert_array_equal(jnp.sum(gamma, axis=-1)[~valid], 0.0)
        # The loss's gradient (γ by the adjoint of α) equals the boxed formula
        # evaluated with the public γ (from α + β): softmax − class sums of γ.
        states = np.asarray(seqctc.extend_with_blanks(labels, lap).states)
        one_hot = np.eye(logits.shape[-1])[states]  # [B, S, K]
        softmax = np.exp(np.asarray(jax.nn.log_softmax(logits)))
        from_gamma = softmax * valid[..., None] - np.einsum(
            "bts,bsk->btk", gamma, one_hot
        )
        np.testing.assert_allclose(grad, from_gamma, atol=1e-5)

    def test_equals_torch_for_every_reduction(self):
        logits, lp, labels, lap = _random_batch(
            np.random.default_rng(2), 6, 16, 5, 6, feasible=False
        )
        configs = [
            (reduction, zero_infinity)
            for reduction in ("none", "sum", "mean")
            for zero_infinity in (False, True)
        ]

        @jax.jit
        def all_configs(x):
            out = []
            for reduction, zero_infinity in configs:
                fn = functools.partial(
                    seqctc.ctc_loss,
                    logit_paddings=lp,
                    labels=labels,
                    label_paddings=lap,
                    reduction=reduction,
                    zero_infinity=zero_infinity,
                )
                loss, vjp = jax.vjp(lambda x, fn=fn: fn(x), x)
                out.append((loss, vjp(jnp.ones_like(loss))[0]))
            return out

        frame_lengths = np.sum(lp == 0, axis=1)
        repeats = np.sum((labels[:, 1:] == labels[:, :-1]) & (lap[:, 1:] == 0), 1)
        feasible = frame_lengths >= np.sum(lap == 0, axis=1) + repeats
        self.assertTrue(feasible.any() and not feasible.all())
        results = all_configs(logits)
        for (reduction, zero_infinity), (loss, grad) in zip(
            configs, results, strict=True
        ):
            want, want_grad = _torch_loss(
                logits,
                lp,
                labels,
                lap,
                reduction=reduction,
                zero_infinity=zero_infinity,
            )
            np.testing.assert_allclose(loss, want, rtol=1e-5)
            # torch's gradient of an infinite loss is NaN; ours is 0.
            np.testing.assert_allclose(
                grad[feasible], want_grad[feasible], rtol=1e-4, atol=2e-6
            )
            np.testing.assert_array_equal(grad[~feasible], 0)

    def test_chunked_gather_equals_torch(self):
        # Long inputs gather their emissions a chunk at a time; force chunks of
        # 8 frames on a batch whose T is not a multiple of 8.
        logits, lp, labels, lap = _random_batch(
            np.random.default_rng(13), 5, 23, 5, 6, feasible=False
        )
        want, want_grad = _torch_loss(logits, lp, labels, lap, reduction="none")
        frame_lengths = np.sum(lp == 0, axis=1)
        repeats = np.sum((labels[:, 1:] == labels[:, :-1]) & (lap[:, 1:] == 0), 1)
        feasible = frame_lengths >= np.sum(lap == 0, axis=1) + repeats
        with mock.patch.object(_ctc_loss, "_CHUNK_BYTES", 0):
            (_, losses), grad = jax.jit(
                jax.value_and_grad(
                    lambda x: (
                        jnp.sum(seqctc.ctc_loss(x, lp, labels, lap)),
                        seqctc.ctc_loss(x, lp, labels, lap),
                    ),
                    has_aux=True,
                )
            )(logits)
        np.testing.assert_allclose(losses, want, rtol=1e-5)
        np.testing.assert_allclose(
            grad[feasible], want_grad[feasible], rtol=1e-4, atol=2e-6
        )
        np.testing.assert_array_equal(grad[~feasible], 0)

    def test_infeasible_rows_are_inf_with_zero_gradient(self):
        logits, lp, labels, lap = _random_batch(
            np.random.default_rng(3), 8, 10, 4, 8, feasible=False
        )
        frame_lengths = np.sum(lp == 0, axis=1)
        repeats = np.sum((labels[:, 1:] == labels[:, :-1]) & (lap[:, 1:] == 0), 1)
        infeasible = frame_lengths < np.sum(lap == 0, axis=1) + repeats
        self.assertTrue(infeasible.any() and not infeasible.all())

        @jax.jit
        def everything(x):
            args = (x, lp, labels, lap)
            return (
                seqctc.ctc_loss(*args),
                seqctc.ctc_loss(*args, reduction="sum"),
                seqctc.ctc_loss(*args, reduction="mean"),
                seqctc.ctc_loss(*args, zero_infinity=True),
                jax.grad(lambda x: seqctc.ctc_loss(x, *args[1:]).sum())(x),
                seqctc.ctc_posteriors(*args),
            )

        loss, total, mean, zeroed, grad, gamma = everything(logits)
        np.testing.assert_array_equal(np.isinf(loss), infeasible)
        self.assertTrue(np.all(np.asarray(loss) > 0))
        self.assertEqual(float(total), np.inf)
        self.assertEqual(float(mean), np.inf)
        chex.assert_tree_all_finite(grad)
        np.testing.assert_array_equal(grad[infeasible], 0)
        np.testing.assert_array_equal(gamma[infeasible], 0)
        np.testing.assert_array_equal(zeroed[infeasible], 0)
        np.testing.assert_array_equal(zeroed[~infeasible], loss[~infeasible])


# --------------------------------------------------------------------------
# Closed forms and identities.


class ClosedFormTest(chex.TestCase):
    @chex.variants(with_jit=True, without_jit=True)
    def test_t_equals_n_has_one_path(self):
        # The shapes of _tiny_batch; T_b == N_b, no adjacent repeats: one path.
        logits, _, _, _, _ = _tiny_batch(0, seed=4)
        lengths = np.array([3, 3, 2, 1, 3, 2, 1, 3])
        lp, lap = _paddings(lengths, 5), _paddings(lengths, 3)
        labels = np.array([[1, 2, 1], [2, 1, 2]] * 4, np.int32)
        fn = self.variant(
            jax.value_and_grad(
                lambda x: seqctc.ctc_loss(x, lp, labels, lap, reduction="sum")
            )
        )
        loss, grad = fn(logits)
        valid = lp == 0  # [B, T]
        one_hot = np.zeros(logits.shape)
        one_hot[:, :3][lap == 0] = np.eye(3)[labels[lap == 0]]
        log_probs = np.log(_softmax(logits))
        np.testing.assert_allclose(loss, -np.sum(log_probs * one_hot), rtol=1e-5)
        want_grad = (_softmax(logits) - one_hot) * valid[:, :, None]
        np.testing.assert_allclose(grad, want_grad, atol=1e-5)


# --------------------------------------------------------------------------
# Gradients.


class GradientTest(chex.TestCase):
    def test_equals_autodiff_of_plain_reference(self):
        logits, lp, labels, lap = _random_batch(np.random.default_rng(6), 3, 7, 4, 3)
        weights = np.array([0.5, -1.0, 2.0], np.float32)

        def weighted(fn):
            return jax.jit(
                jax.value_and_grad(lambda x: jnp.sum(fn(x, lp, labels, lap) * weights))
            )

        loss, grad = weighted(seqctc.ctc_loss)(logits)
        want, want_grad = weighted(_reference_loss)(logits)
        np.testing.assert_allclose(loss, want, rtol=1e-5)
        np.testing.assert_allclose(grad, want_grad, rtol=1e-4, atol=1e-6)
        np.testing.assert_array_equal(grad[lp == 1], 0)

    def test_check_grads_and_brute_force_in_float64(self):
        logits, lp, labels, lap, rows = _tiny_batch(0, seed=7)
        with jax.enable_x64(True):
            x = jnp.asarray(logits, jnp.float64)
            fn = jax.jit(
                lambda x: seqctc.ctc_loss(x, lp, labels, lap, zero_infinity=True)
            )
            loss = fn(x)
            self.assertEqual(loss.dtype, jnp.float64)
            for b, (t_b, row) in enumerate(rows):
                want, _, _, _ = _brute_force(logits[b, :t_b], row, 0)
                want = 0.0 if np.isinf(want) else want
                np.testing.assert_allclose(loss[b], want, rtol=1e-10, atol=1e-12)
            check_grads(fn, (x,), order=1, modes=["rev"], eps=1e-6)
        self.assertEqual(jnp.zeros(1).dtype, jnp.float32)  # x64 did not leak

    def test_vmap_grad_of_jit_and_jit_of_grad(self):
        logits, lp, labels, lap = _random_batch(np.random.default_rng(8), 4, 12, 5, 4)
        stacked = np.stack([logits, logits[::-1]])  # [2, B, T, K]
        lps, labs, laps = (np.stack([a, a[::-1]]) for a in (lp, labels, lap))

        def total(x, a, b, c):
            return seqctc.ctc_loss(x, a, b, c, reduction="mean")

        grads = jax.vmap(jax.grad(jax.jit(total)))(stacked, lps, labs, laps)
        for i in range(2):
            _, want_grad = _torch_loss(
                stacked[i], lps[i], labs[i], laps[i], reduction="mean"
            )
            np.testing.assert_allclose(grads[i], want_grad, rtol=1e-4, atol=1e-6)


# --------------------------------------------------------------------------
# Padding, dtypes, long sequences.


# The engine's paths for many classes, forced on small inputs: emissions
# gathered from the logits (not a kept log-softmax), chunks of 8 frames, and
# the label posteriors scattered into the gradient.
_WIDE_PATHS = {"_NARROW": 0, "_CHUNK_BYTES": 0, "_SCATTER_CLASSES": 0}


class RobustnessTest(chex.TestCase):
    @parameterized.named_parameters(("default", {}), ("wide_paths", _WIDE_PATHS))
    def test_padding_is_never_read(self, patches):
        with contextlib.ExitStack() as stack:
            for name, value in patches.items():
                stack.enter_context(mock.patch.object(_ctc_loss, name, value))
            self._check_padding_is_never_read()

    def _check_padding_is_never_read(self):
        logits, lp, labels, lap = _random_batch(np.random.default_rng(9), 4, 10, 5, 4)
        want, want_grad = _torch_loss(logits, lp, labels, lap, reduction="sum")
        # NaN in padded frames, three extra padded frames, and two extra label
        # slots, all full of garbage.
        big_logits = np.full((4, 13, 5), np.nan, np.float32)
        big_logits[:, :10][lp == 0] = logits[lp == 0]
        big_lp = np.concatenate([lp, np.ones((4, 3), np.float32)], axis=1)
        big_labels = np.concatenate([labels, np.full((4, 2), 99, np.int32)], axis=1)
        big_labels[:, :4][lap == 1] = -7
        big_lap = np.concatenate([lap, np.ones((4, 2), np.float32)], axis=1)

        def fn(x):
            loss, grad = jax.value_and_grad(
                lambda x: seqctc.ctc_loss(
                    x, big_lp, big_labels, big_lap, reduction="sum"
                )
            )(x)
            return loss, grad, seqctc.ctc_posteriors(x, big_lp, big_labels, big_lap)

        loss, grad, gamma = jax.jit(fn)(big_logits)
        np.testing.assert_allclose(loss, want, rtol=1e-5)
        np.testing.assert_allclose(grad[:, :10], want_grad, rtol=1e-4, atol=2e-6)
        np.testing.assert_array_equal(grad[:, 10:], 0)
        chex.assert_tree_all_finite(gamma)

    def test_bfloat16_accumulates_in_float32(self):
        logits, lp, labels, lap = _random_batch(np.random.default_rng(10), 3, 20, 5, 5)
        half = jnp.asarray(logits, jnp.bfloat16)
        loss, grad = _sum_value_and_grad(seqctc.ctc_loss, lp, labels, lap)(half)
        self.assertEqual(grad.dtype, jnp.bfloat16)
        self.assertEqual(loss.dtype, jnp.float32)
        rounded = np.asarray(half.astype(jnp.float32))
        want, want_grad = _torch_loss(rounded, lp, labels, lap, reduction="sum")
        np.testing.assert_allclose(loss, want, rtol=1e-5)
        np.testing.assert_allclose(
            grad.astype(jnp.float32), want_grad, rtol=1e-2, atol=1e-2
        )

    def test_long_sequence(self):
        rng = np.random.default_rng(11)
        frames, max_labels = 10_000, 1_000
        logits = rng.normal(size=(1, frames, 6)).astype(np.float32)
        labels = rng.integers(1, 6, size=(1, max_labels)).astype(np.int32)
        lp = np.zeros((1, frames), np.float32)
        lap = np.zeros((1, max_labels), np.float32)
        loss, grad = _sum_value_and_grad(seqctc.ctc_loss, lp, labels, lap)(logits)
        chex.assert_tree_all_finite((loss, grad))
        want = jax.jit(optax.ctc_loss)(logits, lp, labels, lap)
        np.testing.assert_allclose(loss, want[0], rtol=1e-4)


# --------------------------------------------------------------------------
# Bad values and misuse.


def _bad_batch():
    """Eight rows, five of them bad, and torch's losses and gradients of the
    batch before it was spoiled: ``(logits, lp, labels, lap, bad, want,
    want_grad)``. The shapes of _tiny_batch, so eager mode reuses compiled
    primitives."""
    logits, lp, labels, lap, _ = _tiny_batch(0, seed=12)
    lp = _paddings([5, 4, 5, 4, 5, 3, 5, 5], 5)
    lap = _paddings([2, 2, 3, 2, 2, 1, 2, 1], 3)
    labels = np.array([[1, 2, 0], [2, 2, 0], [2, 1, 1]] * 3, np.int32)[:8]
    want, want_grad = _torch_loss(logits, lp, labels, lap, reduction="none")
    bad = np.array([False, True, True, False, True, True, False, True])
    logits[1, 3, 2] = np.nan  # NaN in a valid frame
    labels[2, 2] = 0  # label equal to the blank
    labels[4, 1] = 3  # label out of range
    labels[5, 0] = -1  # negative label
    labels[7, 0] = 0  # label equal to the blank in a single-label row
    logits[3, 4, 1] = np.nan  # NaN in a padded frame of a good row
    return logits, lp, labels, lap, bad, want, want_grad


class BadValuesTest(chex.TestCase):
    @chex.variants(with_jit=True, without_jit=True)
    def test_bad_rows_are_nan_and_others_unaffected(self):
        logits, lp, labels, lap, bad, want, want_grad = _bad_batch()
        loss, grad = self.variant(
            lambda x: (
                seqctc.ctc_loss(x, lp, labels, lap),
                jax.grad(lambda x: seqctc.ctc_loss(x, lp, labels, lap).sum())(x),
            )
        )(logits)
        np.testing.assert_array_equal(np.isnan(loss), bad)
        np.testing.assert_allclose(loss[~bad], want[~bad], rtol=1e-5)
        np.testing.assert_allclose(grad[~bad], want_grad[~bad], rtol=1e-4, atol=2e-6)

    @parameterized.named_parameters(("default", {}), ("wide_paths", _WIDE_PATHS))
    def test_bad_rows_have_nan_gradients(self, patches):
        # The NaN rows are set before the class sums (the scatter of the wide
        # paths then writes the gradient in place): every entry of a bad row
        # is NaN, the other rows equal torch.
        logits, lp, labels, lap, bad, _, want_grad = _bad_batch()
        with contextlib.ExitStack() as stack:
            for name, value in patches.items():
                stack.enter_context(mock.patch.object(_ctc_loss, name, value))
            grad = jax.jit(
                jax.grad(lambda x: seqctc.ctc_loss(x, lp, labels, lap).sum())
            )(logits)
        self.assertTrue(np.isnan(grad[bad]).all())
        np.testing.assert_allclose(grad[~bad], want_grad[~bad], rtol=1e-4, atol=2e-6)

    def test_check_inputs_names_row_and_reason(self):
        logits = np.zeros((4, 3, 4), np.float32)
        lp = np.zeros((4, 3), np.float32)
        labels = np.array([[1, 2], [1, 0], [1, 4], [2, 2]])
        lap = np.zeros((4, 2), np.float32)
        logits[0, 1, 2] = np.nan
        with pytest.raises(ValueError) as info:
            seqctc.check_inputs(logits, lp, labels, lap)
        message = str(info.value)
        self.assertIn("row 0: NaN logits", message)
        self.assertIn("row 1: label at position 1 equals blank_id=0", message)
        self.assertIn("row 2: label 4 at position 1 is outside [0, 4)", message)
        self.assertNotIn("row 3", message)
        with pytest.raises(ValueError, match="row 1: infeasible"):
            seqctc.check_inputs(logits[2:, :2], lp[2:, :2], labels[2:], lap[2:])
        seqctc.check_inputs(logits[3:], lp[3:], labels[3:], lap[3:])
        seqctc.check_inputs(logits[3:], lp[3:], labels[3:] - 1, lap[3:], blank_id=3)

    @parameterized.named_parameters(
        ("logits_rank", (2, 3), (2, 3), (2, 2), (2, 2), {}, "`logits`"),
        ("logit_paddings_rank", (2, 3, 4), (2, 3, 1), (2, 2), (2, 2), {},
         "`logit_paddings`"),
        ("labels_rank", (2, 3, 4), (2, 3), (2,), (2,), {}, "`labels`"),
        ("batch", (2, 3, 4), (2, 3), (3, 2), (3, 2), {}, "`labels`"),
        ("frames", (2, 3, 4), (2, 4), (2, 2), (2, 2), {}, "`logit_paddings`"),
        ("label_paddings", (2, 3, 4), (2, 3), (2, 2), (2, 3), {}, "`label_paddings`"),
        ("blank_high", (2, 3, 4), (2, 3), (2, 2), (2, 2), {"blank_id": 4},
         "`blank_id`"),
        ("blank_negative", (2, 3, 4), (2, 3), (2, 2), (2, 2), {"blank_id": -1},
         "`blank_id`"),
        ("reduction", (2, 3, 4), (2, 3), (2, 2), (2, 2), {"reduction": "avg"},
         "`reduction`"),
    )  # fmt: skip
    def test_static_misuse_names_the_argument(
        self, logits_shape, lp_shape, labels_shape, lap_shape, kwargs, name
    ):
        args = (
            np.zeros(logits_shape, np.float32),
            np.zeros(lp_shape, np.float32),
            np.ones(labels_shape, np.int32),
            np.zeros(lap_shape, np.float32),
        )
        with pytest.raises(ValueError, match=name):
            seqctc.ctc_loss(*args, **kwargs)
        if "reduction" in kwargs:
            return
        for fn in (seqctc.ctc_log_alpha, seqctc.ctc_posteriors, seqctc.check_inputs):
            with pytest.raises(ValueError, match=name):
                fn(*args, **kwargs)

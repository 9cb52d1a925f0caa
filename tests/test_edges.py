"""CTC and alignment at the edges: padding anywhere, degenerate sizes, forward AD.

The references are independent: the same function on the compacted input (the
valid frames and labels alone, moved to the front by numpy), optax (which skips
padded frames wherever they are), closed forms for empty sizes, and optax's
autodiff for ``jax.jvp`` and ``jax.hessian``.
"""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from absl.testing import parameterized
from oracles import compact, padding_patterns

import seqctc


def _batch(rng, batch=10, frames=12, classes=5, max_labels=4):
    logits = rng.normal(size=(batch, frames, classes)).astype(np.float32)
    labels = rng.integers(1, classes, size=(batch, max_labels)).astype(np.int32)
    logit_paddings = padding_patterns(rng, batch, frames)
    label_paddings = padding_patterns(rng, batch, max_labels)
    # Garbage where padded: it must never be read.
    logits = np.where(logit_paddings[:, :, None] > 0, np.nan, logits)
    labels = np.where(label_paddings > 0, -7, labels)
    return logits, logit_paddings, labels, label_paddings


def _compacted(logits, logit_paddings, labels, label_paddings):
    x, lp = compact(np.nan_to_num(logits), logit_paddings)
    y, lap = compact(labels, label_paddings)
    return x, lp, y, lap


class PaddingAnywhereTest(chex.TestCase):
    @chex.variants(with_jit=True, without_jit=True)
    def test_loss_and_gradient_equal_the_valid_frames_alone(self):
        args = _batch(np.random.default_rng(0))
        ref_args = _compacted(*args)

        def value_and_grad(*a):
            return jax.value_and_grad(
                lambda x: jnp.sum(seqctc.ctc_loss(x, *a[1:], zero_infinity=True))
            )(a[0])

        loss = self.variant(seqctc.ctc_loss)(*args)
        want = seqctc.ctc_loss(*ref_args)
        np.testing.assert_allclose(loss, want, rtol=1e-6)
        _, grad = self.variant(value_and_grad)(*args)
        _, want_grad = value_and_grad(*ref_args)
        grad, want_grad = np.asarray(grad), np.asarray(want_grad)
        chex.assert_tree_all_finite(grad)
        lp = args[1]
        for b in range(lp.shape[0]):
            kept = grad[b][lp[b] == 0]
            np.testing.assert_allclose(kept, want_grad[b, : len(kept)], atol=1e-6)
            np.testing.assert_array_equal(grad[b][lp[b] > 0], 0)

    def test_equals_optax_on_padded_frames_anywhere(self):
        logits, lp, labels, lap = _batch(np.random.default_rng(1))
        # optax reads right-padded labels; padded frames may sit anywhere.
        labels, lap = compact(labels, lap)
        logits = np.nan_to_num(logits)
        feasible = np.isfinite(seqctc.ctc_loss(logits, lp, labels, lap))
        ours = seqctc.ctc_loss(logits, lp, labels, lap)
        theirs = optax.ctc_loss(logits, lp, labels, lap)
        np.testing.assert_allclose(ours[feasible], theirs[feasible], rtol=1e-4)

    @chex.variants(with_jit=True, without_jit=True)
    def test_tables_equal_the_valid_frames_alone(self):
        args = _batch(np.random.default_rng(2), batch=6, frames=9)
        ref_args = _compacted(*args)
        lp = args[1]
        for fn, fill in (
            (seqctc.ctc_log_alpha, -1e3),
            (seqctc.ctc_log_beta, -1e3),
            (seqctc.ctc_posteriors, 0),
        ):
            got = np.asarray(self.variant(fn)(*args))
            want = np.asarray(fn(*ref_args))
            for b in range(lp.shape[0]):
                kept = got[b][lp[b] == 0]
                np.testing.assert_allclose(kept, want[b, : len(kept)], rtol=1e-5)
                padded = got[b][lp[b] > 0]
                assert np.all(padded <= fill) if fill else np.all(padded == 0)


class AlignmentPaddingAnywhereTest(chex.TestCase):
    @chex.variants(with_jit=True, without_jit=True)
    @parameterized.named_parameters(("ctc", 0), ("blank_free", None))
    def test_viterbi_equals_the_valid_frames_alone(self, blank_id):
        args = _batch(np.random.default_rng(7), batch=10, frames=10)
        ref_args = _compacted(*args)
        align = self.variant(lambda *a: seqctc.viterbi_align(*a, blank_id=blank_id))(
            *args
        )
        want = seqctc.viterbi_align(*ref_args, blank_id=blank_id)
        np.testing.assert_allclose(align.log_prob, want.log_prob, rtol=1e-6)
        lp = args[1]
        for b in range(lp.shape[0]):
            for got, ref in (
                (align.frame_labels, want.frame_labels),
                (align.states, want.states),
            ):
                kept = np.asarray(got[b])[lp[b] == 0]
                np.testing.assert_array_equal(kept, np.asarray(ref[b, : len(kept)]))
                np.testing.assert_array_equal(np.asarray(got[b])[lp[b] > 0], -1)
        # The Viterbi loss reads the same alignment.
        loss = seqctc.viterbi_loss(*args, blank_id=blank_id)
        np.testing.assert_allclose(loss, -np.asarray(want.log_prob), rtol=1e-6)


class LectureLossesPaddingAnywhereTest(chex.TestCase):
    @chex.variants(with_jit=True, without_jit=True)
    def test_equal_the_valid_frames_alone(self):
        logits, lp, _, _ = _batch(np.random.default_rng(8), batch=10, frames=9)
        x, ref_lp = compact(np.nan_to_num(logits), lp)
        targets = np.arange(10, dtype=np.int32) % 5
        for schedule in ("last", "uniform", "linear"):
            got = np.asarray(
                self.variant(
                    lambda p, s=schedule: seqctc.sequence_weights(p, schedule=s)
                )(lp)
            )
            want = np.asarray(seqctc.sequence_weights(ref_lp, schedule=schedule))
            for b in range(lp.shape[0]):
                kept = got[b][lp[b] == 0]
                np.testing.assert_allclose(kept, want[b, : len(kept)])
                np.testing.assert_array_equal(got[b][lp[b] > 0], 0)
        np.testing.assert_allclose(
            self.variant(seqctc.weighted_sequence_loss)(logits, lp, targets, None),
            seqctc.weighted_sequence_loss(x, ref_lp, targets, None),
            rtol=1e-6,
        )
        np.testing.assert_array_equal(
            self.variant(seqctc.weighted_vote)(logits, lp),
            seqctc.weighted_vote(x, ref_lp),
        )


class DegenerateSizesTest(chex.TestCase):
    # Jitted only: the sizes are static either way, so an eager run takes the
    # same branches, and it costs ~2 minutes of op-by-op compiles.
    @chex.variants(with_jit=True)
    @parameterized.named_parameters(
        ("empty_batch", 0, 5, 4, 3),
        ("no_frames", 3, 0, 4, 2),
        ("no_labels", 3, 6, 4, 0),
        ("no_frames_no_labels", 2, 0, 3, 0),
        ("blank_only", 2, 5, 1, 0),
    )
    def test_results_not_exceptions(self, batch, frames, classes, max_labels):
        rng = np.random.default_rng(3)
        logits = rng.normal(size=(batch, frames, classes)).astype(np.float32)
        lp = np.zeros((batch, frames), np.float32)
        labels = np.ones((batch, max_labels), np.int32)
        lap = np.zeros((batch, max_labels), np.float32)

        def value_and_grad(x):
            return jax.value_and_grad(
                lambda x: jnp.sum(seqctc.ctc_loss(x, lp, labels, lap))
            )(x)

        loss = self.variant(seqctc.ctc_loss)(logits, lp, labels, lap)
        chex.assert_shape(loss, (batch,))
        if max_labels == 0:
            # The empty label sequence: the all-blank path, log p = Σ log y(blank).
            want = -np.sum(
                jax.nn.log_softmax(logits.astype(np.float64), axis=-1)[..., 0],
                axis=1,
            )
            np.testing.assert_allclose(loss, want, rtol=1e-5, atol=1e-6)
        elif frames == 0:
            np.testing.assert_array_equal(loss, np.inf)
        _, grad = self.variant(value_and_grad)(logits)
        chex.assert_shape(grad, logits.shape)
        chex.assert_tree_all_finite(grad)
        for fn in (seqctc.ctc_log_alpha, seqctc.ctc_log_beta, seqctc.ctc_posteriors):
            out = self.variant(fn)(logits, lp, labels, lap)
            chex.assert_shape(out, (batch, frames, 2 * max_labels + 1))
            chex.assert_tree_all_finite(out)

    @chex.variants(with_jit=True)
    def test_every_row_infeasible_or_fully_padded(self):
        rng = np.random.default_rng(4)
        logits = rng.normal(size=(3, 4, 5)).astype(np.float32)
        labels = np.array([[1, 2, 3, 4, 1]] * 3, np.int32)
        lap = np.zeros((3, 5), np.float32)
        for lp in (np.zeros((3, 4), np.float32), np.ones((3, 4), np.float32)):
            loss = self.variant(seqctc.ctc_loss)(logits, lp, labels, lap)
            np.testing.assert_array_equal(loss, np.inf)
            grad = self.variant(
                jax.grad(lambda x, p=lp: jnp.sum(seqctc.ctc_loss(x, p, labels, lap)))
            )(logits)
            np.testing.assert_array_equal(grad, 0)


class ForwardModeTest(chex.TestCase):
    def _inputs(self):
        rng = np.random.default_rng(5)
        logits = rng.normal(size=(2, 6, 4)).astype(np.float64)
        lp = np.array([[0, 0, 0, 0, 0, 1], [1, 0, 0, 0, 0, 0]], np.float32)
        labels = np.array([[1, 2], [3, 3]], np.int32)
        lap = np.zeros((2, 2), np.float32)
        return logits, lp, labels, lap

    @pytest.mark.long
    def test_jvp_and_hessian_equal_optax_autodiff(self):
        logits, lp, labels, lap = self._inputs()
        with jax.enable_x64(True):
            tangent = np.random.default_rng(6).normal(size=logits.shape)

            def ours(x):
                return jnp.sum(seqctc.ctc_loss(x, lp, labels, lap))

            def theirs(x):
                with jax.numpy_dtype_promotion("standard"):  # optax mixes dtypes
                    return jnp.sum(optax.ctc_loss(x, lp, labels, lap))

            _, t_ours = jax.jvp(ours, (logits,), (tangent,))
            _, t_theirs = jax.jvp(theirs, (logits,), (tangent,))
            np.testing.assert_allclose(t_ours, t_theirs, rtol=1e-8)
            h_ours = jax.jit(jax.hessian(ours))(logits)
            h_theirs = jax.hessian(theirs)(logits)
            np.testing.assert_allclose(h_ours, h_theirs, rtol=1e-6, atol=1e-9)

    def test_log_epsilon_is_accepted(self):
        logits, lp, labels, lap = self._inputs()
        np.testing.assert_array_equal(
            seqctc.ctc_loss(logits, lp, labels, lap, log_epsilon=-1e5),
            seqctc.ctc_loss(logits, lp, labels, lap),
        )


def test_check_inputs_rejects_paddings_outside_zero_one():
    logits = np.zeros((2, 3, 4), np.float32)
    lp = np.array([[0, 0, 0], [0, 0.5, 0]], np.float32)
    with pytest.raises(ValueError, match=r"row 1: `logit_paddings` holds 0.5"):
        seqctc.check_inputs(logits, lp, np.ones((2, 1), np.int32), np.zeros((2, 1)))

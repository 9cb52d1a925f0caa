"""The engine of the full CTC tables α, β and γ, for inspection and teaching.

The recursions of :mod:`seqctc._ctc_loss` (one flat state axis ``[B * S]``,
skipped frames leave the state unchanged), run in log space over every frame,
keeping each frame's α and β.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from seqctc._ctc_loss import (
    Prepared,
    alpha_step,
    emissions,
    final_states,
    finish,
    log_likelihood,
    logsumexp3,
    shift_up,
)
from seqctc._types import NEG_INF, Array


def log_alpha(prep: Prepared, emit: Array | None = None) -> Array:
    """``[T, B * S]`` α after each frame (skipped frames repeat the last one).

    ``emit`` is :func:`emissions` of ``prep``, gathered here if None.
    """
    lat = prep.lat

    def body(alpha, emit):
        alpha = alpha_step(alpha, emit, lat.enter1, lat.skip)
        return alpha, alpha

    emit = emissions(prep) if emit is None else emit
    _, alphas = jax.lax.scan(body, lat.alpha0, emit)
    return alphas


def log_beta(prep: Prepared, emit: Array | None = None) -> Array:
    """``[T, B * S]`` β at each frame, from each row's last counted frame back.

    The carry is β + log y at the next counted frame, so that holes of skipped
    frames pass it on unchanged. ``emit`` as for :func:`log_alpha`.
    """
    lat = prep.lat
    batch, max_frames = prep.valid.shape
    num_states = prep.graph.states.shape[1]
    frames = jnp.arange(max_frames, dtype=jnp.int32)
    counted = prep.count  # [B, T]
    last = jnp.max(jnp.where(counted, frames[None, :], -1), axis=1, initial=-1)
    last = jnp.repeat(last, num_states)  # [B * S]
    end1, end2 = final_states(prep.graph)
    beta_final = jnp.where((end1 | end2).reshape(-1), 0, NEG_INF)
    beta_final = beta_final.astype(lat.alpha0.dtype)
    enter_up = shift_up(lat.enter1, 1, False)  # state s + 1 is entered from s
    skip_up = shift_up(lat.skip, 2, False)  # state s + 2 is entered from s

    def body(carry, xs):
        t, emit = xs
        from1 = jnp.where(enter_up, shift_up(carry, 1, NEG_INF), NEG_INF)
        from2 = jnp.where(skip_up, shift_up(carry, 2, NEG_INF), NEG_INF)
        beta = jnp.where(t == last, beta_final, logsumexp3(carry, from1, from2))
        carry = jnp.where(emit > 0, carry, beta + emit)
        return carry, beta

    carry0 = jnp.full_like(lat.alpha0, NEG_INF)
    emit = emissions(prep) if emit is None else emit
    _, betas = jax.lax.scan(body, carry0, (frames, emit), reverse=True)
    return betas


def on_graph(prep: Prepared) -> Array:
    """``[T, B, S]`` bool: valid frame and unpadded state."""
    state = jnp.arange(prep.graph.states.shape[1], dtype=jnp.int32)
    return prep.valid.T[:, :, None] & (
        state[None, None, :] < prep.graph.num_states[None, :, None]
    )


def public(prep: Prepared, table: Array) -> Array:
    """``[T, B * S]`` -> ``[B, T, S]``, NEG_INF on padded frames and states."""
    batch, max_frames = prep.valid.shape
    table = table.reshape(max_frames, batch, prep.graph.states.shape[1])
    return jnp.transpose(jnp.where(on_graph(prep), table, NEG_INF), (1, 0, 2))


def posteriors(prep: Prepared) -> Array:
    """``[B, T, S]`` γ = exp(α + β − log p); 0 off the graph and on impossible rows."""
    emit = emissions(prep)  # one gather for both tables
    alphas = log_alpha(prep, emit)  # [T, B * S]
    last = alphas[-1] if alphas.shape[0] else prep.lat.alpha0
    log_p = log_likelihood(prep.graph, last)
    _, possible = finish(prep, log_p)
    log_a, log_b = public(prep, alphas), public(prep, log_beta(prep, emit))
    on_graph = (log_a > 0.5 * NEG_INF) & possible[:, None, None]
    z = jnp.where(on_graph, log_a + log_b - log_p[:, None, None], 0)
    return jnp.where(on_graph, jnp.exp(z), 0)

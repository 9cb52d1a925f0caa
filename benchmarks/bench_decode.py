"""CTC beam search and greedy decoding: seqctc against its peers, side by side.

Peers, all on the same inputs in one process:

- fast-ctc-decode ``beam_search`` (native Rust, one utterance per call,
  probabilities ``[T, K]`` float32, blank first, ``beam_size=16``,
  ``beam_cut_threshold=0`` so that nothing is pruned);
- pyctcdecode without LM (pure Python, one utterance per call, log-probs
  ``[T, K]``, blank ``""`` first, ``beam_width=16``; its pruning is switched off
  with ``beam_prune_logp=token_min_logp=-1e9``, so it prunes no more than we do);
- ``keras.ops.ctc_decode(strategy="beam_search", beam_width=16)`` on the JAX
  backend, jitted, whole batch; its work per frame grows with ``T``, so for
  ``T > 50`` it runs on the first 50 frames of 4 utterances only and its time is
  scaled by ``T / 50`` (which flatters keras a lot);
- greedy: ``seqctc.greedy_decode`` against ``keras.ops.ctc_decode(strategy="greedy")``.

seqctc decodes the whole batch in one jitted ``beam_decode`` call (beam width 16,
exact prefix beam search, no pruning options). The slow Python peer decodes a
subset of the utterances per repetition; throughput is utterances per second
either way. Repetitions are interleaved after a warm-up, the median is reported.

Top-1 agreement: how often a peer's best hypothesis equals ours, and how often
ours is at least as likely, scoring both with ``seqctc.ctc_loss`` (the exact
``log p(labels | x)``).

Inputs: random-but-peaky logits (a Gaussian background plus a spike of random
height on a blank-heavy random class sequence, like a trained model) for
``(B, T, K) = (32, 200, 32)`` and ``(8, 1000, 64)``, and the real handwriting
logits of ``tests/data/ctcdecoder-samples`` (2 utterances, T = 100 and
32, K = 80, blank = 79).

A real recogniser: PP-OCRv4's text-line recogniser (bundled in
``rapidocr-onnxruntime``, K = 6,625 classes, blank 0) run with onnxruntime on
32 English lines rendered with PIL in DejaVu fonts, of varied length and
quality (clean, blurred, noisy, low resolution). Its softmax outputs, as
logits = log of the softmax, are decoded as one padded batch by seqctc and one
line at a time by fast-ctc-decode (``beam_cut_threshold=1e-4``: 0 makes it
allocate gigabytes at this K) and pyctcdecode (its default pruning), with and
without fusion (a ``CharNGramLM`` of order 3, hotwords, an insertion bonus),
and swept over beam widths; random peaky logits (spikes raised by
2 log(K / 32)) sweep the vocabulary size.
Results and plots go to ``docs/_results/`` (``--out-dir DIR`` elsewhere):
``bench_decode.md``, ``bench_decode_width.png``, ``bench_decode_vocab.png``.
``--save-sample`` writes the top-32 classes of a few real lines to
``tests/data/ppocr_sample.npz``.

Usage::

    python benchmarks/bench_decode.py            # full run, writes the results
    python benchmarks/bench_decode.py --quick    # a short run, no file
    python benchmarks/bench_decode.py --real-only --out-dir /tmp/r  # PP-OCRv4 part
"""

from __future__ import annotations

import argparse
import functools
import importlib.metadata
import math
import os
import platform
import sys
import time
from pathlib import Path

os.environ.setdefault("KERAS_BACKEND", "jax")
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import keras  # noqa: E402
import numpy as np  # noqa: E402
from fast_ctc_decode import beam_search as fcd_beam_search  # noqa: E402
from pyctcdecode import build_ctcdecoder  # noqa: E402

import seqctc  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _timing import interleaved_ms  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "docs" / "_results" / "bench_decode.md"
DATA = ROOT / "tests" / "data" / "ctcdecoder-samples"
WIDTH = 16
KERAS_MAX_FRAMES = 50
KERAS_MAX_UTTS = 4


def peaky_logits(rng, batch, frames, classes, boost=0.0):
    """Gaussian logits plus a spike of height 2..10 (+ boost) on a blank-heavy path."""
    logits = 1.5 * rng.normal(size=(batch, frames, classes))
    path = rng.integers(1, classes, size=(batch, frames))
    path = np.where(rng.random((batch, frames)) < 0.6, 0, path)
    # Tokens last a few frames, as in a trained model.
    path = np.repeat(path[:, ::3], 3, axis=1)[:, :frames]
    height = rng.uniform(2.0, 10.0, size=(batch, frames)) + boost
    np.put_along_axis(
        logits,
        path[:, :, None],
        np.take_along_axis(logits, path[:, :, None], -1) + height[:, :, None],
        -1,
    )
    lengths = rng.integers(int(0.8 * frames), frames + 1, size=batch)
    lengths[0] = frames
    return logits.astype(np.float32), lengths, 0


def handwriting_logits():
    rows = []
    for name in ("line", "word"):
        raw = np.loadtxt(
            DATA / f"harald_{name}_rnnOutput.csv", delimiter=";", usecols=range(80)
        )
        rows.append(raw.astype(np.float32))
    frames = max(len(r) for r in rows)
    logits = np.zeros((len(rows), frames, 80), np.float32)
    for i, r in enumerate(rows):
        logits[i, : len(r)] = r
    return logits, np.array([len(r) for r in rows]), 79


def log_softmax(x):
    x = x.astype(np.float64)
    m = x.max(-1, keepdims=True)
    return (x - m - np.log(np.exp(x - m).sum(-1, keepdims=True))).astype(np.float32)


class Case:
    """One input batch and every decoder run on it."""

    def __init__(self, name, logits, lengths, blank, slow_utts):
        self.name = name
        self.logits, self.lengths, self.blank = logits, lengths, blank
        batch, frames, classes = logits.shape
        self.shape = (batch, frames, classes)
        self.paddings = np.asarray(seqctc.lengths_to_paddings(lengths, frames))
        # Peers want the blank first: class i of theirs is perm[i] of ours.
        self.perm = np.array([blank] + [k for k in range(classes) if k != blank])
        lp = log_softmax(logits)[:, :, self.perm]
        self.peer_log_probs = [lp[b, : lengths[b]] for b in range(batch)]
        self.peer_probs = [np.exp(x).astype(np.float32) for x in self.peer_log_probs]
        self.alphabet = "".join(chr(0x4E00 + i) for i in range(classes))
        self.char_to_class = {c: int(self.perm[i]) for i, c in enumerate(self.alphabet)}
        self.slow_utts = min(slow_utts, batch)

        self.ours = jax.jit(
            functools.partial(seqctc.beam_decode, beam_width=WIDTH, blank_id=blank)
        )
        self.ours_greedy = jax.jit(
            functools.partial(seqctc.greedy_decode, blank_id=blank)
        )
        self.keras_frames = min(frames, KERAS_MAX_FRAMES)
        self.keras_scale = frames / self.keras_frames
        self.keras_utts = min(batch, KERAS_MAX_UTTS)
        self.keras_logits = jnp.asarray(logits[: self.keras_utts, : self.keras_frames])
        self.keras_lengths = jnp.asarray(
            np.minimum(lengths[: self.keras_utts], self.keras_frames)
        )

        def keras_beam(x, lengths):
            return keras.ops.ctc_decode(
                x, lengths, strategy="beam_search", beam_width=WIDTH, mask_index=blank
            )

        def keras_greedy(x, lengths):
            return keras.ops.ctc_decode(x, lengths, strategy="greedy", mask_index=blank)

        self.keras_beam = jax.jit(keras_beam)
        self.keras_greedy = jax.jit(keras_greedy)
        self.pyctc = build_ctcdecoder([""] + list(self.alphabet[1:]))
        self.x = jnp.asarray(logits)
        self.p = jnp.asarray(self.paddings)
        self.outputs = {}

    # Each runner returns (seconds, utterances decoded) and stores its output.
    def run_ours(self):
        t0 = time.perf_counter()
        out = jax.block_until_ready(self.ours(self.x, self.p))
        self.outputs["ours"] = out
        return time.perf_counter() - t0, self.shape[0]

    def run_ours_greedy(self):
        t0 = time.perf_counter()
        out = jax.block_until_ready(self.ours_greedy(self.x, self.p))
        self.outputs["ours_greedy"] = out
        return time.perf_counter() - t0, self.shape[0]

    def run_fcd(self):
        t0 = time.perf_counter()
        seqs = [
            fcd_beam_search(p, self.alphabet, beam_size=WIDTH, beam_cut_threshold=0.0)[
                0
            ]
            for p in self.peer_probs
        ]
        dt = time.perf_counter() - t0
        self.outputs["fast-ctc-decode"] = [
            [self.char_to_class[c] for c in s] for s in seqs
        ]
        return dt, self.shape[0]

    def run_pyctc(self):
        t0 = time.perf_counter()
        texts = [
            self.pyctc.decode_beams(
                lp, beam_width=WIDTH, beam_prune_logp=-1e9, token_min_logp=-1e9
            )[0][0]
            for lp in self.peer_log_probs[: self.slow_utts]
        ]
        dt = time.perf_counter() - t0
        self.outputs["pyctcdecode"] = [
            [self.char_to_class[c] for c in t] for t in texts
        ]
        return dt, self.slow_utts

    def run_keras(self):
        t0 = time.perf_counter()
        out = jax.block_until_ready(
            self.keras_beam(self.keras_logits, self.keras_lengths)
        )
        dt = time.perf_counter() - t0
        self.outputs["keras"] = out
        return dt * self.keras_scale, self.keras_utts

    def run_keras_greedy(self):
        t0 = time.perf_counter()
        out = jax.block_until_ready(
            self.keras_greedy(self.x, jnp.asarray(self.lengths))
        )
        self.outputs["keras_greedy"] = out
        return time.perf_counter() - t0, self.shape[0]


def token_lists(tokens, lengths):
    tokens, lengths = np.asarray(tokens), np.asarray(lengths)
    return [list(map(int, tokens[b, : lengths[b]])) for b in range(len(lengths))]


def keras_lists(decoded):
    paths = np.asarray(decoded[0])[0]  # [B, T], −1 padded
    return [[int(k) for k in row if k >= 0] for row in paths]


def log_likelihood(logits, lengths, seqs, blank):
    """log p(seq | x) per utterance, exact CTC."""
    batch, frames, _ = logits.shape
    max_len = max(1, max(len(s) for s in seqs))
    labels = np.zeros((batch, max_len), np.int32)
    label_paddings = np.ones((batch, max_len), np.float32)
    for b, s in enumerate(seqs):
        labels[b, : len(s)] = s
        label_paddings[b, : len(s)] = 0.0
    paddings = seqctc.lengths_to_paddings(lengths, frames)
    loss = seqctc.ctc_loss(logits, paddings, labels, label_paddings, blank_id=blank)
    return -np.asarray(loss, np.float64)


def agreement(case, ours, theirs, logits=None, lengths=None):
    """(top-1 equal fraction, ours at least as likely fraction)."""
    n = len(theirs)
    logits = case.logits[:n] if logits is None else logits[:n]
    lengths = case.lengths[:n] if lengths is None else lengths[:n]
    ours = ours[:n]
    same = np.mean([a == b for a, b in zip(ours, theirs, strict=True)])
    ll_ours = log_likelihood(logits, lengths, ours, case.blank)
    ll_theirs = log_likelihood(logits, lengths, theirs, case.blank)
    at_least = np.mean(ll_ours >= ll_theirs - 1e-4 * np.abs(ll_theirs) - 1e-4)
    return same, at_least


def bench_case(case, repeats):
    runners = {
        "seqctc beam_decode": case.run_ours,
        "fast-ctc-decode": case.run_fcd,
        "pyctcdecode": case.run_pyctc,
        "keras beam_search": case.run_keras,
        "seqctc greedy_decode": case.run_ours_greedy,
        "keras greedy": case.run_keras_greedy,
    }
    for run in runners.values():  # warm-up and compilation
        run()
    per_utt = {name: [] for name in runners}
    for _ in range(repeats):
        for name, run in runners.items():
            dt, n = run()
            per_utt[name].append(dt / n)
    med = {name: float(np.median(v)) for name, v in per_utt.items()}

    ours = token_lists(
        case.outputs["ours"].tokens[:, 0], case.outputs["ours"].lengths[:, 0]
    )
    agree = {
        "fast-ctc-decode": agreement(case, ours, case.outputs["fast-ctc-decode"]),
        "pyctcdecode": agreement(case, ours, case.outputs["pyctcdecode"]),
    }
    # keras saw only the first KERAS_MAX_FRAMES frames: compare on those.
    kf = case.keras_frames
    k_lengths = np.minimum(case.lengths[: case.keras_utts], kf)
    ours_capped = case.ours(
        case.keras_logits, seqctc.lengths_to_paddings(k_lengths, kf)
    )
    agree["keras beam_search"] = agreement(
        case,
        token_lists(ours_capped.tokens[:, 0], ours_capped.lengths[:, 0]),
        keras_lists(case.outputs["keras"]),
        logits=case.logits[: case.keras_utts, :kf],
        lengths=k_lengths,
    )
    greedy = case.outputs["ours_greedy"]
    same_greedy = np.mean(
        [
            a == b
            for a, b in zip(
                token_lists(greedy.tokens, greedy.lengths),
                keras_lists(case.outputs["keras_greedy"]),
                strict=True,
            )
        ]
    )
    agree["keras greedy"] = (same_greedy, float("nan"))
    return med, agree


# --------------------------------------------------------------------------
# A real recogniser: PP-OCRv4 on rendered text lines.

FONTS = Path("/usr/share/fonts/truetype/dejavu")
FONT_FILES = [
    "DejaVuSans.ttf",
    "DejaVuSerif.ttf",
    "DejaVuSansMono.ttf",
    "DejaVuSans-Bold.ttf",
    "DejaVuSerif-Italic.ttf",
    "DejaVuSansCondensed.ttf",
    "DejaVuSans-Oblique.ttf",
]
LINES = [
    "Hello world",
    "The quick brown fox jumps over the lazy dog.",
    "CTC decoding at real vocabulary sizes",
    "42",
    "Invoice No. 2024-0117",
    "Connectionist Temporal Classification (Graves et al., 2006)",
    "beam search",
    "Total: $1,234.56",
    "Please call +1 (555) 010-9988 before 5 pm.",
    "JAX is Autograd and XLA",
    "naive cafe resume",
    "OK",
    "Section 3.2: Prefix beam search with path merging",
    "user@example.com",
    "The rain in Spain stays mainly in the plain.",
    "2026-12-01 23:59:59",
    "A long line of text that keeps going for quite a while to test longer "
    "sequences of frames.",
    "Quality control",
    "Sphinx of black quartz, judge my vow!",
    "x = f(y) + 3 * z",
    "Warning: do not open",
    "Room 101",
    "Pack my box with five dozen liquor jugs.",
    "recogniser",
    "Lorem ipsum dolor sit amet, consectetur adipiscing elit.",
    "ABCDEFGHIJKLMNOPQRSTUVWXYZ",
    "0123456789",
    "To be, or not to be, that is the question.",
    "Munchen Zurich",
    "end of line",
    "searching beams of hypotheses in the dark",
    "Fig. 7: throughput against the beam width",
]
HOTWORDS = ["beam", "search"]


def render_line(text, i, rng):
    """``[h, w, 3]`` uint8 image of ``text``; quality varies with ``i``."""
    from PIL import Image, ImageDraw, ImageFilter, ImageFont

    font = ImageFont.truetype(
        str(FONTS / FONT_FILES[i % len(FONT_FILES)]), int(rng.integers(22, 40))
    )
    left, top, right, bottom = font.getbbox(text)
    pad = int(rng.integers(4, 12))
    fg, bg = int(rng.integers(0, 90)), int(rng.integers(150, 256))
    img = Image.new("L", (right - left + 2 * pad, bottom - top + 2 * pad), bg)
    ImageDraw.Draw(img).text((pad - left, pad - top), text, fill=fg, font=font)
    quality = i % 4  # clean, blurred, noisy, low resolution
    if quality == 1:
        img = img.filter(ImageFilter.GaussianBlur(rng.uniform(0.8, 1.8)))
    if quality == 3:
        small = (max(1, img.width // 3), max(1, img.height // 3))
        img = img.resize(small).resize(img.size)
    a = np.asarray(img, np.float32)
    if quality == 2:
        a = np.clip(a + rng.normal(0, 35, a.shape), 0, 255)
    return np.repeat(a[:, :, None], 3, axis=2).astype(np.uint8)


def ppocr_outputs(lines=LINES, seed=0):
    """``(logits [B, T, K] = log softmax, lengths [B], alphabet)`` of PP-OCRv4.

    The model is ``rapidocr_onnxruntime/models/ch_PP-OCRv4_rec_infer.onnx``:
    input ``[1, 3, 48, W]`` BGR scaled ``(v / 255 − 0.5) / 0.5``, the line
    resized to height 48 and right padded to ``W = max(320, ⌈48 w / h⌉)``;
    output the softmax ``[1, W / 8, 6625]``. Classes: blank, the ONNX
    metadata's ``character`` list, a space.
    """
    import importlib.util

    import onnxruntime
    from PIL import Image

    spec = importlib.util.find_spec("rapidocr_onnxruntime")
    model = Path(spec.origin).parent / "models" / "ch_PP-OCRv4_rec_infer.onnx"
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = 2
    session = onnxruntime.InferenceSession(
        str(model), options, providers=["CPUExecutionProvider"]
    )
    chars = session.get_modelmeta().custom_metadata_map["character"].splitlines()
    alphabet = ["<blank>"] + chars + [" "]
    rng = np.random.default_rng(seed)
    outputs = []
    for i, text in enumerate(lines):
        image = render_line(text, i, rng)
        h, w = image.shape[:2]
        resized_w = math.ceil(48 * w / h)
        width = max(320, resized_w)
        im = Image.fromarray(image).resize((resized_w, 48), Image.BILINEAR)
        x = np.zeros((3, 48, width), np.float32)
        bgr = np.asarray(im, np.float32)[:, :, ::-1]
        x[:, :, :resized_w] = ((bgr / 255 - 0.5) / 0.5).transpose(2, 0, 1)
        name = session.get_inputs()[0].name
        outputs.append(session.run(None, {name: x[None]})[0][0])
    frames = max(len(o) for o in outputs)
    logits = np.zeros((len(outputs), frames, outputs[0].shape[-1]), np.float32)
    for i, o in enumerate(outputs):
        with np.errstate(divide="ignore"):
            logits[i, : len(o)] = np.log(o)
    return logits, np.array([len(o) for o in outputs]), alphabet


def save_sample(logits, lengths, path, lines=(0, 3, 6, 16), top=32):
    """The ``top`` best classes of a few real lines (values and classes)."""
    rows = list(lines)
    frames = int(max(lengths[rows]))
    x = logits[rows, :frames]
    classes = np.argsort(-x, axis=-1, kind="stable")[:, :, :top]
    values = np.take_along_axis(x, classes, -1)
    np.savez_compressed(
        path,
        values=values.astype(np.float32),
        classes=classes.astype(np.int16),
        lengths=lengths[rows].astype(np.int32),
        num_classes=np.int32(logits.shape[-1]),
        texts=np.array([LINES[i] for i in rows]),
    )


def text_to_classes(text, alphabet):
    index = {c: i for i, c in enumerate(alphabet) if i > 0}
    return [index[c] for c in text if c in index]


def lm_corpus(alphabet):
    """Training text for the character LM: seqctc's own docstrings."""
    import inspect

    texts = []
    for name in dir(seqctc):
        doc = inspect.getdoc(getattr(seqctc, name))
        if doc:
            texts.extend(line.strip() for line in doc.splitlines() if line.strip())
    return [text_to_classes(t, alphabet) for t in texts]


class RealCase:
    """The recogniser's batch, and every decoder on it."""

    def __init__(self, logits, lengths, alphabet):
        self.logits, self.lengths, self.alphabet = logits, lengths, alphabet
        self.batch, self.frames, self.classes = logits.shape
        self.x = jnp.asarray(logits)
        self.p = jnp.asarray(seqctc.lengths_to_paddings(lengths, self.frames))
        self.peer_log_probs = [
            np.maximum(logits[b, : lengths[b]], -1e30) for b in range(self.batch)
        ]
        self.peer_probs = [np.exp(x).astype(np.float32) for x in self.peer_log_probs]
        # Unique one-character labels for the peers (the dictionary has repeats).
        self.labels = "".join(chr(0x4E00 + i) for i in range(self.classes))
        self.label_to_class = {c: i for i, c in enumerate(self.labels)}
        self.pyctc = build_ctcdecoder([""] + list(self.labels[1:]))
        self.lm = seqctc.CharNGramLM.fit(
            lm_corpus(alphabet), order=3, num_classes=self.classes
        )
        self.hotwords = tuple(tuple(text_to_classes(w, alphabet)) for w in HOTWORDS)
        self.outputs = {}
        self._jitted = {}

    def ours(self, width, **fusion):
        key = (width, tuple(sorted(fusion)))
        if key not in self._jitted:
            self._jitted[key] = jax.jit(
                functools.partial(
                    seqctc.beam_decode,
                    beam_width=width,
                    hotwords=fusion.pop("hotwords", None),
                ),
            )
        return self._jitted[key]

    def run_ours(self, width, name=None, **fusion):
        out = jax.block_until_ready(
            self.ours(width, **dict(fusion))(
                self.x, self.p, **{k: v for k, v in fusion.items() if k != "hotwords"}
            )
        )
        self.outputs[name or f"ours{width}"] = out
        return out

    def run_greedy(self):
        out = jax.block_until_ready(_greedy_jit(self.x, self.p))
        self.outputs["greedy"] = out
        return out

    def run_greedy_tokens(self):
        out = jax.block_until_ready(_greedy_tokens_jit(self.x, self.p))
        self.outputs["greedy tokens"] = out
        return out

    def run_numpy_greedy(self, scores=False):
        seqs, path_scores = [], []
        for b in range(self.batch):
            x = self.logits[b, : self.lengths[b]]
            best = x.argmax(-1)
            keep = (best != 0) & np.r_[True, best[1:] != best[:-1]]
            seqs.append(best[keep])
            if scores:  # the path's log p: sum of (best logit - logsumexp)
                top = x[np.arange(len(best)), best]
                lse = top + np.log(np.exp(x - top[:, None]).sum(-1))
                path_scores.append(float((top - lse).sum()))
        self.outputs["numpy greedy"] = seqs
        return seqs, path_scores

    def run_fcd(self, width):
        seqs = [
            fcd_beam_search(p, self.labels, beam_size=width, beam_cut_threshold=1e-4)[0]
            for p in self.peer_probs
        ]
        self.outputs[f"fcd{width}"] = [
            [self.label_to_class[c] for c in s] for s in seqs
        ]

    def run_pyctc(self, width):
        texts = [
            self.pyctc.decode_beams(lp, beam_width=width)[0][0]
            for lp in self.peer_log_probs
        ]
        self.outputs[f"pyctc{width}"] = [
            [self.label_to_class[c] for c in t] for t in texts
        ]


_greedy_jit = jax.jit(seqctc.greedy_decode)
# The tokens alone, as an argmax gives them: XLA drops the unused path scores
# (and with them the normaliser's exponential over every class).
_greedy_tokens_jit = jax.jit(
    lambda x, p: seqctc.greedy_decode(x, p)._replace(scores=None)
)


def per_line_likelihood(case, seqs):
    return log_likelihood(case.logits, case.lengths, seqs, 0)


def bench_real(repeats, widths):
    logits, lengths, alphabet = ppocr_outputs()
    case = RealCase(logits, lengths, alphabet)
    fusions = {
        "lm": dict(lm=case.lm, lm_weight=0.5),
        "hotwords": dict(hotwords=case.hotwords, hotword_weight=2.0),
        "bonus": dict(insertion_bonus=0.5),
        "lm + hotwords + bonus": dict(
            lm=case.lm, lm_weight=0.5, hotwords=case.hotwords, insertion_bonus=0.5
        ),
    }
    runners = {
        "seqctc beam_decode W=16": lambda: case.run_ours(16),
        "seqctc beam_decode W=64": lambda: case.run_ours(64),
        "fast-ctc-decode W=16": lambda: case.run_fcd(16),
        "fast-ctc-decode W=64": lambda: case.run_fcd(64),
        "pyctcdecode W=16": lambda: case.run_pyctc(16),
        "pyctcdecode W=64": lambda: case.run_pyctc(64),
    }
    for name, kw in fusions.items():
        runners[f"seqctc W=16 + {name}"] = functools.partial(
            case.run_ours, 16, name=name, **kw
        )
    ms = interleaved_ms(runners, repeats, warmup=1)
    # The two greedy decoders (milliseconds each) in rounds of their own: after
    # a peer's seconds of pure Python, a short call meets cold caches.
    greedy = {
        "seqctc greedy_decode": case.run_greedy,
        "numpy argmax + collapse": case.run_numpy_greedy,
        "seqctc greedy_decode, tokens only": case.run_greedy_tokens,
        "numpy argmax + collapse + path score": functools.partial(
            case.run_numpy_greedy, scores=True
        ),
    }
    ms.update(interleaved_ms(greedy, 3 * repeats, warmup=1))
    rows = []

    def ratio(a, b):
        return ms[b] / ms[a]

    def likely(ours, theirs):
        ll_ours = per_line_likelihood(case, ours)
        ll_theirs = per_line_likelihood(case, theirs)
        at_least = ll_ours >= ll_theirs - 1e-4 * np.abs(ll_theirs) - 1e-4
        same = sum(a == b for a, b in zip(ours, theirs, strict=True))
        return int(same), int(at_least.sum())

    tok = {
        w: token_lists(
            case.outputs[f"ours{w}"].tokens[:, 0],
            case.outputs[f"ours{w}"].lengths[:, 0],
        )
        for w in (16, 64)
    }
    n = case.batch
    for name, t in ms.items():
        note = ""
        if name.startswith(("fast-ctc-decode", "pyctcdecode")):
            w = 16 if "16" in name else 64
            key = ("fcd" if name.startswith("fast") else "pyctc") + str(w)
            same, at_least = likely(tok[w], case.outputs[key])
            speed = ratio(f"seqctc beam_decode W={w}", name)
            note = f"{speed:.1f}× | {same}/{n} | {at_least}/{n}"
        elif name == "numpy argmax + collapse":
            note = f"{ms['seqctc greedy_decode'] / t:.2f}× slower than numpy | – | –"
        elif name == "seqctc greedy_decode, tokens only":
            slower = t / ms["numpy argmax + collapse"]
            note = f"{slower:.2f}× slower than numpy's argmax | – | –"
        elif name == "numpy argmax + collapse + path score":
            r = t / ms["seqctc greedy_decode"]
            how = f"{r:.2f}× faster" if r >= 1 else f"{1 / r:.2f}× slower"
            note = f"greedy_decode {how} | – | –"
        elif "+" in name and name.startswith("seqctc W=16"):
            note = f"cost {t / ms['seqctc beam_decode W=16']:.2f}× plain | – | –"
        else:
            note = "– | – | –"
        rows.append(f"| {name} | {t:,.1f} | {n / t * 1e3:,.1f} | {note} |")
    table = "\n".join(
        [
            "| decoder | ms per batch | lines/s | seqctc speed-up | top-1 = seqctc "
            "| seqctc top-1 at least as likely |",
            "|---|---:|---:|---:|---:|---:|",
            *rows,
        ]
    )
    # Beam width sweep (same batch).
    sweep = {}
    for w in widths:
        r = {
            "seqctc beam_decode": lambda w=w: case.run_ours(w),
            "fast-ctc-decode": lambda w=w: case.run_fcd(w),
            "pyctcdecode": lambda w=w: case.run_pyctc(w),
            # No width: the same at every W, drawn for scale.
            "seqctc greedy_decode": case.run_greedy,
            "numpy argmax + collapse": case.run_numpy_greedy,
        }
        sweep[w] = {
            k: n / v * 1e3
            for k, v in interleaved_ms(r, max(3, repeats // 2), warmup=1).items()
        }
    facts = (
        f"{n} lines, T = {int(lengths.min())}–{int(lengths.max())} frames "
        f"(padded batch [{n}, {case.frames}, {case.classes}]), "
        f"{int(lengths.sum())} valid frames."
    )
    return table, sweep, facts, case


def vocab_runners(rng, k, width):
    """Every decoder on one batch of random peaky logits with ``k`` classes."""
    # Spikes grow with log K, so that the peak keeps its share of the mass as
    # in a trained model (otherwise thousands of classes pass fast-ctc-decode's
    # cut and it allocates gigabytes).
    logits, lengths, _ = peaky_logits(rng, 16, 100, k, boost=2 * math.log(k / 32))
    lp = log_softmax(logits)
    paddings = jnp.asarray(seqctc.lengths_to_paddings(lengths, 100))
    x = jnp.asarray(lp)
    labels = "".join(chr(0x4E00 + i) for i in range(k))
    pyctc = build_ctcdecoder([""] + list(labels[1:]))
    rows = [lp[b, : lengths[b]] for b in range(16)]
    probs = [np.exp(r).astype(np.float32) for r in rows]
    beam = jax.jit(functools.partial(seqctc.beam_decode, beam_width=width))
    runners = {
        "seqctc beam_decode": lambda: jax.block_until_ready(beam(x, paddings)),
        "fast-ctc-decode": lambda: [
            fcd_beam_search(p, labels, beam_size=width, beam_cut_threshold=1e-4)
            for p in probs
        ],
        "pyctcdecode": lambda: [
            pyctc.decode_beams(r, beam_width=width) for r in rows[:4]
        ],
        "seqctc greedy_decode": lambda: jax.block_until_ready(_greedy_jit(x, paddings)),
        "numpy argmax + collapse": lambda: [r.argmax(-1) for r in rows],
    }
    x_lengths = jnp.asarray(lengths)
    keras_greedy = jax.jit(
        lambda x, n: keras.ops.ctc_decode(x, n, strategy="greedy", mask_index=0)
    )
    runners["keras greedy"] = lambda: jax.block_until_ready(keras_greedy(x, x_lengths))
    if k <= VOCAB_KERAS_MAX_K:
        # Its beam search re-reads its path buffer every frame: 2 utterances,
        # the first VOCAB_KERAS_FRAMES frames, time scaled by 100 / that.
        keras_beam = jax.jit(
            lambda x, n: keras.ops.ctc_decode(
                x, n, strategy="beam_search", beam_width=width, mask_index=0
            )
        )
        kx = x[:2, :VOCAB_KERAS_FRAMES]
        kn = jnp.minimum(x_lengths[:2], VOCAB_KERAS_FRAMES)
        runners["keras beam_search"] = lambda: jax.block_until_ready(keras_beam(kx, kn))
    return runners


# Utterances each vocabulary-sweep runner decodes per call, and keras' cap.
VOCAB_UTTS = {"pyctcdecode": 4, "keras beam_search": 2}
VOCAB_KERAS_FRAMES = 20
VOCAB_KERAS_MAX_K = 512


def bench_vocab(repeats, sizes, width=16):
    """Throughput (utt/s) of every decoder against K on random peaky logits."""
    rng = np.random.default_rng(1)
    result = {}
    for k in sizes:
        ms = interleaved_ms(vocab_runners(rng, k, width), repeats, warmup=1)
        scale = {"keras beam_search": 100 / VOCAB_KERAS_FRAMES}
        result[k] = {
            name: VOCAB_UTTS.get(name, 16) / (t * scale.get(name, 1.0)) * 1e3
            for name, t in ms.items()
        }
    return result


def plot_sweeps(width_sweep, vocab_sweep, out_dir):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    for sweep, xlabel, name, title in (
        (width_sweep, "beam width W", "width", "PP-OCRv4 outputs, K = 6,625"),
        (
            vocab_sweep,
            "classes K",
            "vocab",
            "random peaky logits, B = 16, T = 100, W = 16 (keras: K ≤ 512)",
        ),
    ):
        fig, ax = plt.subplots(figsize=(5.5, 3.6))
        xs = sorted(sweep)
        decoders = list(dict.fromkeys(d for x in xs for d in sweep[x]))
        for decoder in decoders:
            have = [x for x in xs if decoder in sweep[x]]
            style = "o--" if "greedy" in decoder or "argmax" in decoder else "o-"
            ax.plot(have, [sweep[x][decoder] for x in have], style, label=decoder)
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xlabel(xlabel)
        ax.set_ylabel("utterances / s")
        ax.set_title(title, fontsize=10)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=7)
        fig.tight_layout()
        fig.savefig(out_dir / f"bench_decode_{name}.png", dpi=120)
        plt.close(fig)


def versions():
    names = ["jax", "keras", "numpy", "fast-ctc-decode", "pyctcdecode"]
    return ", ".join(f"{n} {importlib.metadata.version(n)}" for n in names)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a short run")
    parser.add_argument("--repeats", type=int, default=None)
    parser.add_argument("--no-write", action="store_true")
    parser.add_argument(
        "--real-only", action="store_true", help="only the real recogniser"
    )
    parser.add_argument(
        "--save-sample", action="store_true", help="write tests/data/ppocr_sample.npz"
    )
    parser.add_argument(
        "--out-dir",
        type=Path,
        default=None,
        help="where bench_decode.md and the bench_decode_*.png figures go "
        "(default docs/_results; given, a --quick run writes too)",
    )
    args = parser.parse_args()
    out_dir = RESULTS.parent if args.out_dir is None else args.out_dir
    write = not args.no_write and (not args.quick or args.out_dir is not None)
    if args.save_sample:
        logits, lengths, _ = ppocr_outputs()
        save_sample(logits, lengths, ROOT / "tests" / "data" / "ppocr_sample.npz")
        return
    repeats = args.repeats or (3 if args.quick else 7)
    rng = np.random.default_rng(0)
    cases = [
        Case("random (32, 200, 32)", *peaky_logits(rng, 32, 200, 32), slow_utts=2),
        Case("random (8, 1000, 64)", *peaky_logits(rng, 8, 1000, 64), slow_utts=1),
        Case("handwriting (2, 100, 80)", *handwriting_logits(), slow_utts=2),
    ]
    if args.quick:
        cases = cases[:1] + cases[2:]
    if args.real_only:
        cases = []

    lines = [
        "| input (B, T, K) | decoder | utt/s | seqctc speed-up | top-1 = seqctc "
        "| seqctc top-1 at least as likely |",
        "|---|---|---:|---:|---:|---:|",
    ]
    for case in cases:
        med, agree = bench_case(case, repeats)
        for name, t in med.items():
            ours = med[
                "seqctc greedy_decode" if "greedy" in name else "seqctc beam_decode"
            ]
            same, at_least = agree.get(name, (float("nan"), float("nan")))
            note = ""
            if name == "keras beam_search" and case.keras_scale != 1:
                note = (
                    f" ({case.keras_utts} utts, first {case.keras_frames} frames,"
                    f" time ×{case.keras_scale:g})"
                )
            if name == "pyctcdecode" and case.slow_utts < case.shape[0]:
                note = f" ({case.slow_utts} of {case.shape[0]} utts)"
            fmt = lambda v: "–" if np.isnan(v) else f"{100 * v:.0f} %"  # noqa: E731
            lines.append(
                f"| {case.name} | {name}{note} | {1 / t:,.1f} | {t / ours:,.1f}× "
                f"| {'–' if name.startswith('seqctc') else fmt(same)} "
                f"| {'–' if name.startswith('seqctc') else fmt(at_least)} |"
            )
        print("\n".join(lines[-len(med) :]), flush=True)
    table = "\n".join(lines)
    widths = [8, 16, 64] if args.quick else [4, 16, 64]
    sizes = [32, 6625] if args.quick else [32, 512, 6625]
    real_table, width_sweep, real_facts, _ = bench_real(repeats, widths)
    print(real_table, flush=True)
    vocab_sweep = bench_vocab(max(3, repeats // 2), sizes)
    print(width_sweep, vocab_sweep, flush=True)
    if write:
        out_dir.mkdir(parents=True, exist_ok=True)
        plot_sweeps(width_sweep, vocab_sweep, out_dir)
    facts = (
        f"Machine: {platform.processor() or platform.machine()}, "
        f"{os.cpu_count()} CPU cores (shared), {platform.system()}; "
        f"{jax.devices()[0].platform.upper()} backend; {versions()}. "
        f"Median of {repeats} interleaved repetitions after a warm-up; "
        f"beam width {WIDTH}."
    )
    print()
    print(table)
    print(facts)
    if args.real_only:
        table = (
            "Not re-measured in this run (`--real-only`); "
            "`python benchmarks/bench_decode.py` measures it."
        )
    if write:
        (out_dir / RESULTS.name).write_text(
            "# Decoding benchmark\n\n"
            "Generated by `python benchmarks/bench_decode.py`.\n\n"
            + facts
            + "\n\n## A real recogniser: PP-OCRv4 (K = 6,625)\n\n"
            + real_facts
            + "\n\n"
            + real_table
            + "\n\n"
            + REAL_NOTES
            + "\n\nThroughput against the beam width (PP-OCRv4 batch) and against "
            "K (random peaky logits), figures `bench_decode_width.png` and "
            "`bench_decode_vocab.png` next to this file.\n\n"
            + sweep_table(width_sweep, "W")
            + "\n\n"
            + sweep_table(vocab_sweep, "K")
            + "\n\n## Random and handwriting logits (small K)\n\n"
            + table
            + "\n\n"
            + NOTES
        )


def sweep_table(sweep, letter):
    xs = sorted(sweep)
    names = list(dict.fromkeys(n for x in xs for n in sweep[x]))
    head = f"| {letter} | " + " | ".join(names) + " |"
    rule = "|---:|" + "---:|" * len(names)

    def cell(x, n):
        return f"{sweep[x][n]:,.1f}" if n in sweep[x] else "–"

    body = [f"| {x:,} | " + " | ".join(cell(x, n) for n in names) + " |" for x in xs]
    return "Utterances per second:\n\n" + "\n".join([head, rule, *body])


REAL_NOTES = """\
Notes: one padded batch for seqctc (jitted, beam width W, exact prefix beam
search), one line per call for fast-ctc-decode (`beam_cut_threshold=1e-4`) and
pyctcdecode (default pruning: `beam_prune_logp=-10`, `token_min_logp=-5`).
"At least as likely" compares the exact CTC log-likelihood (`seqctc.ctc_loss`)
of the two top-1 hypotheses, line by line. The fused rows use a `CharNGramLM` of
order 3 fitted on seqctc's docstrings (`lm_weight=0.5`), the hotwords "beam" and
"search" (`hotword_weight=2`), an insertion bonus of 0.5, and all three; their
cost is relative to the plain W = 16 search. The LM and the weights are
arguments of the jitted call (traced), as an application passes them; the
search does the same work as with constants. The greedy decoders are timed
against each other in rounds of their own (3× as many). `greedy_decode`
returns the path's log probability too, which takes the normaliser (an
exponential of every class of every frame); "tokens only" jits it without its
scores, which XLA then never computes, against numpy's argmax alone, and
"+ path score" adds numpy's log-sum-exp of each frame to the argmax, against
the whole `greedy_decode`.
"""


NOTES = """\
Notes: throughput is utterances per second; "seqctc speed-up" is the peer's
time per utterance over seqctc's (beam rows against `beam_decode`, greedy rows
against `greedy_decode`). seqctc decodes the whole batch in one jitted call;
fast-ctc-decode and pyctcdecode decode one utterance per call (pyctcdecode on a
subset of the batch, it is slow), with their pruning switched off
(`beam_cut_threshold=0`; `beam_prune_logp=token_min_logp=-1e9`). keras'
beam search re-reads its whole `[2W, T]` path buffer every frame (about 10 s per
utterance at T = 200 here); it decodes the first 50 frames of at most 4
utterances and its time is multiplied by T / 50, which underestimates its cost,
and its top-1 is compared with seqctc's on those 50 frames. "At least as
likely" compares the exact CTC log-likelihood (`seqctc.ctc_loss`) of the two
top-1 hypotheses.
"""


if __name__ == "__main__":
    main()

r"""Train a CTC recogniser of handwritten digit strings with seqctc.

Every training example is a strip of 1-8 handwritten digits written side by
side, and its only label is the digit string: nobody says where one digit ends
and the next begins (the lecture's Setting III). A convolutional frame encoder
reads the strip column by column, a bidirectional GRU (``seqctc.nn``) gives
per-frame class scores over ``{blank, 0, ..., 9}``, and ``seqctc.ctc_loss``
sums over every segmentation. Decoding is greedy, prefix beam search, and beam
search with a character n-gram language model fit on the training strings.

The strings are numbers as people write them (years, dates, times, postcodes,
phone numbers, amounts; `data.draw_strings`), so a language model has
structure to learn. The images need no download: strips are assembled from
scikit-learn's bundled 8x8 digits, with disjoint source images for training,
validation (the LM weight is tuned there) and test.

Modules, in reading order (flax's examples layout):

* `config`: the frozen `Config` of every hyperparameter.
* `data`: digit images, the number grammar, strips and batches.
* `model`: the recogniser and the three training losses.
* `train`: the jitted steps, checkpoints, evaluation and `train_and_evaluate`.
* `plots`: the PNG figures written at the end.
* `main`: command-line flags, one per `Config` field.
* `report`: the results table of the docs from the runs' ``summary.json``.

Run it with ``python examples/digits_ctc.py`` (``--help`` lists the flags).
"""

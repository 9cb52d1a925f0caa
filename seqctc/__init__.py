"""seqctc: learning from unsegmented sequence labels in JAX."""

# Padding conversions.
from seqctc._utils import lengths_to_paddings
from seqctc._utils import paddings_to_lengths

# Recurrent cells and masked scans (_cells.py, _scan.py).
from seqctc._cells import GRUParams
from seqctc._cells import LSTMParams
from seqctc._cells import RNNParams
from seqctc._cells import gru_step
from seqctc._cells import gru_step_backward
from seqctc._cells import init_gru_params
from seqctc._cells import init_lstm_params
from seqctc._cells import init_rnn_params
from seqctc._cells import lstm_step
from seqctc._cells import lstm_step_backward
from seqctc._cells import rnn_relu_step
from seqctc._cells import rnn_relu_step_backward
from seqctc._cells import rnn_step
from seqctc._cells import rnn_step_backward
from seqctc._scan import bidirectional_rnn
from seqctc._scan import scan_rnn
from seqctc._scan import stacked_rnn

# CTC (_ctc.py).
from seqctc._ctc import ExtendedLabels
from seqctc._ctc import extend_with_blanks
from seqctc._ctc import ctc_log_alpha
from seqctc._ctc import ctc_log_beta
from seqctc._ctc import ctc_posteriors
from seqctc._ctc import ctc_loss
from seqctc._ctc import check_inputs

# Decoding (_decode.py, _lm.py).
from seqctc._decode import Decoded
from seqctc._decode import greedy_decode
from seqctc._decode import beam_decode
from seqctc._lm import LanguageModel
from seqctc._lm import CharNGramLM

# Sparse n-gram and word language models (_ngram.py, _wordlm.py).
from seqctc._ngram import TokenNGramLM
from seqctc._wordlm import WordLMFusion
from seqctc._wordlm import WordNGramLM
from seqctc._wordlm import WordState

# Viterbi alignment (_align.py).
from seqctc._align import Alignment
from seqctc._align import TokenSpans
from seqctc._align import token_spans
from seqctc._align import viterbi_align

# The lecture's losses (_segment.py).
from seqctc._segment import count_segmentations
from seqctc._segment import framewise_loss
from seqctc._segment import framewise_predict
from seqctc._segment import log_count_segmentations
from seqctc._segment import segments_to_frame_labels
from seqctc._segment import sequence_weights
from seqctc._segment import viterbi_loss
from seqctc._segment import weighted_sequence_loss
from seqctc._segment import weighted_vote

__version__ = "0.1.0"

"""seqctc: learning from unsegmented sequence labels in JAX."""

# Padding conversions.
from seqctc._utils import lengths_to_paddings
from seqctc._utils import paddings_to_lengths

# Recurrent cells and masked scans (_cells.py, _scan.py).

# CTC (_ctc.py).
from seqctc._ctc import ExtendedLabels
from seqctc._ctc import extend_with_blanks

# Decoding (_decode.py, _lm.py).

# Viterbi alignment (_align.py).

# The lecture's losses (_segment.py).

__version__ = "0.1.0"

"""Entry point of the digits example: ``python examples/digits_ctc.py --help``.

The code lives in the package ``examples/digits`` (``data``, ``model``,
``train``, ``main``); this file only runs its ``main``. Run as a script, the
folder of this file is on ``sys.path``, so the package imports as ``digits``.
"""

import time

START = time.perf_counter()  # before JAX is imported: the wall time includes it

from digits.main import main  # noqa: E402

if __name__ == "__main__":
    main(start=START)

"""Examples of seqctc; each folder is one example (``digits``: digit strips)."""

"""The parts of ``compare()``: reading evaluated runs, paired significance, training-data
changes, interpretation lines and the table/CSV/JSON renderings.

Nothing here imports torch; NumPy is loaded only when intervals are computed.
"""

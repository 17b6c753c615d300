"""The parts of ``reproduce()``: hash verification of a sealed run (:mod:`.verify`) and full
reproduction by retraining or re-evaluating (:mod:`.rerun`). See ``docs/compare-reproduce.md``."""

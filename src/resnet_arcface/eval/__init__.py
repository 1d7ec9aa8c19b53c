"""Open-set face verification: embeddings, pair scores, the ROC and the true accept rate at a fixed FAR.

:mod:`.verify` scores every pair of a held-out set (exactly, or in blocks through :mod:`.chunked` when the
pairs do not fit in memory); :mod:`.pairs_protocol` runs LFW's fixed pair lists with 10-fold accuracy;
:mod:`.readout` chooses what is compared (the embedding or an earlier stage, with or without the mirror image).
"""
from .chunked import PairHistogram, pair_histogram
from .readout import READOUTS, FlipSum, StageFeatures
from .verify import (EXACT_MAX_PAIRS, FARS, embed, evaluate, evaluate_embeddings, pair_scores, pixel_baseline, roc,
                     roc_auc, summarize_roc, tar_at_far)

__all__ = ["embed", "pair_scores", "roc", "roc_auc", "tar_at_far", "summarize_roc", "evaluate_embeddings",
           "evaluate", "pixel_baseline", "pair_histogram", "PairHistogram", "FARS", "EXACT_MAX_PAIRS", "StageFeatures",
           "FlipSum", "READOUTS"]

"""Open-set face verification: embeddings, pair scores, the ROC and the true accept rate at a fixed FAR."""
from .verify import FARS, embed, evaluate, evaluate_embeddings, pair_scores, roc, tar_at_far

__all__ = ["embed", "pair_scores", "roc", "tar_at_far", "evaluate_embeddings", "evaluate", "FARS"]

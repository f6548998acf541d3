"""Stage two: sequence heads trained on the cached embeddings, metrics, run folders, prediction."""

"""Processing-job step code: feature extraction and model evaluation."""

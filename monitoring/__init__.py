"""Model health after deployment: baselines, data capture, drift checks, retraining."""

"""Training-job step code: an XGBoost churn classifier under the SageMaker contract."""

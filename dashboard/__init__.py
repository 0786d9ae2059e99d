"""A Streamlit dashboard of model health: executions, versions, drift, predictions."""

"""Demo data: a realistic churn data set written into Snowflake tables."""

-- PREDICTIONS: one current score per entity and as-of date. Never replaced by the
-- deployer (it holds the data): a change of shape comes as a new versioned file.
-- FEATURES_HASH is what "changed since the last run" compares.
CREATE TABLE IF NOT EXISTS {{table}} (
    {{entity_column}} {{entity_type}} NOT NULL,
    AS_OF_DATE DATE NOT NULL,
    SCORE FLOAT NOT NULL,
    MODEL_PACKAGE_ARN VARCHAR,
    PIPELINE_EXECUTION_ID VARCHAR,
    FEATURES_HASH VARCHAR,
    SCORED_AT TIMESTAMP_NTZ NOT NULL
) CLUSTER BY (AS_OF_DATE);

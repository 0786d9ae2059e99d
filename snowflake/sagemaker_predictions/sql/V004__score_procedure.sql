-- Scores the entities that are new or whose features changed since they were last
-- scored for the as-of date, and MERGEs them into PREDICTIONS (one statement, so one
-- transaction). Feature query: the feature set's own SQL, with the scripting variables
-- AS_OF and LABEL_WINDOW_DAYS in place of its bound parameters. SCORED_AT is the UTC
-- time as TIMESTAMP_NTZ, whatever the session's TIMEZONE (as the batch job writes it).
CREATE OR REPLACE PROCEDURE {{procedure}}(AS_OF DATE)
COPY GRANTS
RETURNS VARCHAR
LANGUAGE SQL
EXECUTE AS OWNER
AS
$$
DECLARE
    LABEL_WINDOW_DAYS INTEGER DEFAULT {{label_window_days}};
BEGIN
    MERGE INTO {{table}} AS t
    USING (
        SELECT f.{{entity_column}}, :AS_OF AS AS_OF_DATE,
               {{function}}({{feature_arguments}}) AS SCORE,
               CAST(NULL AS VARCHAR) AS MODEL_PACKAGE_ARN,
               'task:{{task}}' AS PIPELINE_EXECUTION_ID,
               f.FEATURES_HASH,
               {{utc_now}} AS SCORED_AT
        FROM (
            SELECT q.*, {{features_hash}} AS FEATURES_HASH
            FROM (
{{features_sql}}
            ) AS q
        ) AS f
        LEFT JOIN {{table}} AS p
            ON p.{{entity_column}} = f.{{entity_column}} AND p.AS_OF_DATE = :AS_OF
        WHERE p.{{entity_column}} IS NULL
           OR p.FEATURES_HASH IS DISTINCT FROM f.FEATURES_HASH
    ) AS s
    ON t.{{entity_column}} = s.{{entity_column}} AND t.AS_OF_DATE = s.AS_OF_DATE
    WHEN MATCHED THEN UPDATE SET SCORE = s.SCORE,
        MODEL_PACKAGE_ARN = s.MODEL_PACKAGE_ARN,
        PIPELINE_EXECUTION_ID = s.PIPELINE_EXECUTION_ID,
        FEATURES_HASH = s.FEATURES_HASH, SCORED_AT = s.SCORED_AT
    WHEN NOT MATCHED THEN INSERT ({{entity_column}}, AS_OF_DATE, SCORE,
        MODEL_PACKAGE_ARN, PIPELINE_EXECUTION_ID, FEATURES_HASH, SCORED_AT)
    VALUES (s.{{entity_column}}, s.AS_OF_DATE, s.SCORE, s.MODEL_PACKAGE_ARN,
        s.PIPELINE_EXECUTION_ID, s.FEATURES_HASH, s.SCORED_AT);
    RETURN 'merged ' || SQLROWCOUNT || ' rows';
END;
$$;

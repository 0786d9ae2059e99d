-- PREDICT_CHURN(features...) -> probability, served by the endpoint in Snowflake's
-- external function format ({"data": [[row, f1, ...]]} in, {"data": [[row, p]]} out).
-- MAX_BATCH_ROWS keeps each request under the InvokeEndpoint payload limit.
-- COPY GRANTS: a replaced function keeps its grants (PREDICTIONS_READER's USAGE);
-- the deployer also applies V008 (grants) again whenever this object changes.
CREATE OR REPLACE EXTERNAL FUNCTION {{function}}({{function_arguments}})
    COPY GRANTS
    RETURNS FLOAT
    API_INTEGRATION = {{api_integration}}
    MAX_BATCH_ROWS = {{max_batch_rows}}
    AS {{api_url}};

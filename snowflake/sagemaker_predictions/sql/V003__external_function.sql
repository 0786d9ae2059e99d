-- PREDICT_CHURN(features...) -> probability, served by the endpoint in Snowflake's
-- external function format ({"data": [[row, f1, ...]]} in, {"data": [[row, p]]} out).
-- MAX_BATCH_ROWS keeps each request under the InvokeEndpoint payload limit.
CREATE OR REPLACE EXTERNAL FUNCTION {{function}}({{function_arguments}})
    RETURNS FLOAT
    API_INTEGRATION = {{api_integration}}
    MAX_BATCH_ROWS = {{max_batch_rows}}
    AS {{api_url}};

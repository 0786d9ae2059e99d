-- The API integration through which Snowflake calls API Gateway in front of the
-- SageMaker endpoint. Created once and then ALTERed, never replaced: CREATE OR REPLACE
-- would issue a new API_AWS_EXTERNAL_ID and break the IAM role's trust policy.
CREATE API INTEGRATION IF NOT EXISTS {{api_integration}}
    API_PROVIDER = aws_api_gateway
    API_AWS_ROLE_ARN = {{api_aws_role_arn}}
    API_ALLOWED_PREFIXES = ({{api_allowed_prefixes}})
    ENABLED = TRUE;
ALTER API INTEGRATION {{api_integration}} SET
    API_AWS_ROLE_ARN = {{api_aws_role_arn}}
    API_ALLOWED_PREFIXES = ({{api_allowed_prefixes}})
    ENABLED = TRUE;

-- Readers of the predictions: the BI role reads PREDICTIONS and may call PREDICT_CHURN.
GRANT USAGE ON DATABASE {{database}} TO ROLE {{grant_role}};
GRANT USAGE ON SCHEMA {{database}}.{{schema}} TO ROLE {{grant_role}};
GRANT SELECT ON TABLE {{table}} TO ROLE {{grant_role}};
GRANT USAGE ON FUNCTION {{function}}({{function_types}}) TO ROLE {{grant_role}};

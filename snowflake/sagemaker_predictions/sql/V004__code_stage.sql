-- The internal stage that holds the scoring procedure's code: one folder per release
-- (sagemaker_predictions/<version>/), so a rollback finds the previous release's files.
-- Created once and never replaced (replacing a stage would drop the files under it).
CREATE STAGE IF NOT EXISTS {{code_stage}}
    COMMENT = 'Code of the scoring procedure {{procedure}}: one folder per release';

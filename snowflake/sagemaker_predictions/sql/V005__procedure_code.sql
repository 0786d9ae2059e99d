-- The release's code and the deployed settings, uploaded as they are (AUTO_COMPRESS =
-- FALSE: Snowflake imports a zip, not a gzipped zip). OVERWRITE: a folder holds one
-- release, and a redeploy whose files the ledger already records uploads nothing.
PUT {{archive_uri}} @{{code_stage}}/{{code_folder}}/ AUTO_COMPRESS = FALSE OVERWRITE = TRUE;
PUT {{settings_uri}} @{{code_stage}}/{{code_folder}}/ AUTO_COMPRESS = FALSE OVERWRITE = TRUE;

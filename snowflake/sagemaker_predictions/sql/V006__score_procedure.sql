-- The scoring procedure: the release's Python handler (handler.run, the logic in
-- procedure.py) run by Snowflake with the release's code and settings as IMPORTS.
-- It scores the entities that are new or whose features changed for the as-of date
-- (default: today in UTC) through the external function and merges them into
-- PREDICTIONS in one statement; it returns its counts. EXECUTE AS OWNER: the task and
-- anyone allowed to call it write PREDICTIONS with the owner's rights. The COMMENT
-- names the release and the digests of what it imports, so a new release or new
-- settings replace the procedure (COPY GRANTS keeps what was granted on it).
CREATE OR REPLACE PROCEDURE {{procedure}}(AS_OF VARCHAR DEFAULT NULL)
COPY GRANTS
RETURNS VARIANT
LANGUAGE PYTHON
RUNTIME_VERSION = {{runtime_version}}
PACKAGES = ({{procedure_packages}})
IMPORTS = ({{procedure_imports}})
HANDLER = {{handler}}
COMMENT = {{procedure_comment}}
EXECUTE AS OWNER;

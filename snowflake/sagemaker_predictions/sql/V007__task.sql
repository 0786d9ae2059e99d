-- Runs the scoring procedure on the configured schedule. A replaced task starts
-- suspended, so the deployer resumes it. TIMEZONE = 'UTC' is the session time zone
-- the task's statement runs in (the account default is often America/Los_Angeles),
-- and the as-of date is converted to UTC explicitly as well (and passed as text in
-- ISO form, whatever the account's DATE_OUTPUT_FORMAT): a 06:00 UTC run scores that
-- UTC day, not the previous one. Nothing is granted on the task, so no COPY GRANTS.
CREATE OR REPLACE TASK {{task}}
    {{task_warehouse}}
    SCHEDULE = {{schedule}}
    TIMEZONE = 'UTC'
AS
    CALL {{procedure}}(TO_VARCHAR({{utc_today}}, 'YYYY-MM-DD'));
ALTER TASK {{task}} RESUME;

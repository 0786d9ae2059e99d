-- Runs the scoring procedure on the configured schedule. A replaced task starts
-- suspended, so the deployer resumes it.
CREATE OR REPLACE TASK {{task}}
    {{task_warehouse}}
    SCHEDULE = {{schedule}}
AS
    CALL {{procedure}}(CURRENT_DATE());
ALTER TASK {{task}} RESUME;

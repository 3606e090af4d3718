-- name: serve_run
-- purpose: One run's row, manifest included, for its dashboard page.
-- params:
--   run_id (required): the run's id
-- columns: the runs table
SELECT * FROM runs WHERE run_id = $run_id

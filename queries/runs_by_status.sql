-- name: runs_by_status
-- purpose: How many runs are pending, running, finished, failed or diverged, per experiment, with their checkpoints and time span.
-- params:
--   experiment = null: only this experiment (default: every experiment)
--   revision = 'current': which runs: current (those the spec's current revision produces; superseded runs left out), all, or a revision hash
-- columns: experiment, status, n_runs, n_checkpoints, first_started_at, last_finished_at
SELECT r.experiment, r.status,
       count(*) AS n_runs,
       coalesce(sum(n.n_checkpoints), 0)::BIGINT AS n_checkpoints,
       min(r.started_at) AS first_started_at,
       max(r.finished_at) AS last_finished_at
FROM runs AS r
LEFT JOIN (SELECT run_id, count(*) AS n_checkpoints FROM checkpoints GROUP BY run_id) AS n USING (run_id)
WHERE ($experiment IS NULL OR r.experiment = $experiment)
  AND r.run_id IN (SELECT run_id FROM run_selection WHERE revision = $revision)
GROUP BY r.experiment, r.status
ORDER BY r.experiment, r.status

-- name: serve_experiments
-- purpose: Every experiment row (spec, plan), for the dashboard.
-- params: none
-- columns: the experiments table
SELECT * FROM experiments ORDER BY experiment

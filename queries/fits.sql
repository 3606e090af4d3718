-- name: fits
-- purpose: Stored fits, newest first, with the law, its parameters, the query that selected the data and the goodness of fit.
-- params:
--   experiment = null: only fits of this experiment (default: all)
-- columns: fit_id, experiment, name, law, params, intervals, n_points, objective, query_name, created_at
SELECT fit_id, experiment, name, law, params, intervals, n_points, objective, query_name, created_at
FROM fits
WHERE $experiment IS NULL OR experiment = $experiment
ORDER BY created_at DESC, fit_id

-- name: coordcheck
-- purpose: Mean |activation| per layer, step and width recorded by `scaledb coordcheck` (Tensor Programs V coordinate check).
-- params:
--   experiment (required): the coordinate-check experiment (`<experiment>-coordcheck`)
--   revision = 'current': which runs: current (those the spec's current revision produces; superseded runs left out), all, or a revision hash
-- columns: run_id, parameterization, d_model, step, layer, act_abs_mean
SELECT
    r.run_id, r.parameterization, r.d_model, m.step,
    replace(m.name, 'act_mean_abs.', '') AS layer,
    m.value AS act_abs_mean
FROM metrics AS m
JOIN runs AS r USING (run_id)
WHERE r.experiment = $experiment
  AND r.run_id IN (SELECT run_id FROM run_selection WHERE revision = $revision)
  AND m.name LIKE 'act_mean_abs.%'
ORDER BY r.parameterization, layer, m.step, r.d_model

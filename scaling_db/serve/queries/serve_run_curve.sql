-- name: serve_run_curve
-- purpose: One run's checkpoints, for its curve on the dashboard.
-- params:
--   run_id (required): the run's id
-- columns: step, tokens, flops_6n_nonembed, flops_6n, flops_exact, train_loss, eval_loss, lr, wall_time_s
SELECT step, tokens, flops_6n_nonembed, flops_6n, flops_exact, train_loss, eval_loss, lr, wall_time_s
FROM checkpoints WHERE run_id = $run_id ORDER BY step

-- name: serve_runs
-- purpose: Every run with its sweep columns and its last checkpoint (one pass over checkpoints), for the dashboard.
-- params: none
-- columns: the runs table without its manifest, then n_checkpoints, final_step, final_tokens, final_flops, final_train_loss, final_eval_loss
SELECT r.* EXCLUDE (manifest),
       c.n_checkpoints, c.final_step, c.final_tokens, c.final_flops, c.final_train_loss, c.final_eval_loss
FROM runs AS r
LEFT JOIN (
    SELECT run_id, count(*) AS n_checkpoints, max(step) AS final_step,
           arg_max(tokens, step) AS final_tokens, arg_max(flops_exact, step) AS final_flops,
           arg_max(train_loss, step) AS final_train_loss, arg_max(eval_loss, step) AS final_eval_loss
    FROM checkpoints
    GROUP BY run_id
) AS c USING (run_id)
ORDER BY r.experiment, r.run_id

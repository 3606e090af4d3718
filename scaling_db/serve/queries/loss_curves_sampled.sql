-- name: loss_curves_sampled
-- purpose: loss_curves (same columns) thinned in the database: per run, the last checkpoint of each log-spaced step bucket (per_efold buckets per factor e of steps); every run keeps its final checkpoint.
-- params:
--   experiment (required): the experiment's name
--   convention = 'exact' (exact | 6n | 6n_nonembed): FLOPs convention of `flops`
--   loss = 'eval' (eval | train): which loss becomes `loss`
--   status = 'any' (finished | running | failed | diverged | pending | any): only runs in this state
--   per_efold = 12: buckets per factor e of steps (more keeps more points)
-- columns: run_id, name, status, config_id, seed, n_params, n_params_nonembed, d_model, parameterization, lr, step, tokens, flops, loss, eval_loss, train_loss, lr_at_step, wall_time_s
WITH sampled AS (
    SELECT c.*
    FROM checkpoints AS c
    SEMI JOIN runs AS r ON r.run_id = c.run_id
        AND r.experiment = $experiment AND ($status = 'any' OR r.status = $status)
    QUALIFY row_number() OVER (
        PARTITION BY c.run_id, floor(ln(greatest(c.step, 1)) * $per_efold)
        ORDER BY c.step DESC) = 1
)
SELECT
    r.run_id, r.name, r.status, r.config_id, r.seed,
    r.n_params, r.n_params_nonembed, r.d_model, r.parameterization, r.lr,
    c.step, c.tokens,
    CASE $convention WHEN 'exact' THEN c.flops_exact WHEN '6n' THEN c.flops_6n ELSE c.flops_6n_nonembed END AS flops,
    CASE $loss WHEN 'eval' THEN c.eval_loss ELSE c.train_loss END AS loss,
    c.eval_loss, c.train_loss, c.lr AS lr_at_step, c.wall_time_s
FROM runs AS r
JOIN sampled AS c USING (run_id)
ORDER BY r.n_params, r.lr, r.seed, r.run_id, c.step

-- name: loss_curves_sampled
-- purpose: loss_curves (same columns) thinned in the database for the dashboard: every run_stride-th run (in the order n_params, lr, seed, run_id) and, per run, the last checkpoint of each log-spaced step bucket (per_efold buckets per factor e of steps); a drawn run keeps its final checkpoint.
-- params:
--   experiment (required): the experiment's name
--   revision = 'current': which runs: current (those the spec's current revision produces; superseded runs left out), all, or a revision hash
--   convention = 'exact' (exact | 6n | 6n_nonembed): FLOPs convention of `flops`
--   loss = 'eval' (eval | train): which loss becomes `loss`
--   status = 'any' (finished | running | failed | diverged | pending | any): only runs in this state
--   per_efold = 12: buckets per factor e of steps (more keeps more points)
--   run_stride = 1: draw every run_stride-th run (1: all)
-- columns: run_id, name, status, config_id, seed, n_params, n_params_nonembed, d_model, parameterization, lr, step, tokens, flops, loss, eval_loss, train_loss, lr_at_step, wall_time_s, final_loss, uniform_loss
WITH chosen AS (
    SELECT run_id
    FROM runs
    WHERE experiment = $experiment AND ($status = 'any' OR status = $status)
      AND run_id IN (SELECT run_id FROM run_selection WHERE revision = $revision)
    QUALIFY (row_number() OVER (ORDER BY n_params, lr, seed, run_id) - 1) % $run_stride = 0
),
sampled AS (
    -- arg_max(x, step): x at the bucket's last checkpoint, in one pass over the checkpoints
    SELECT c.run_id, max(c.step) AS step, arg_max(c.tokens, c.step) AS tokens,
           arg_max(c.flops_exact, c.step) AS flops_exact, arg_max(c.flops_6n, c.step) AS flops_6n,
           arg_max(c.flops_6n_nonembed, c.step) AS flops_6n_nonembed,
           arg_max(c.eval_loss, c.step) AS eval_loss, arg_max(c.train_loss, c.step) AS train_loss,
           arg_max(c.lr, c.step) AS lr, arg_max(c.wall_time_s, c.step) AS wall_time_s
    FROM checkpoints AS c
    SEMI JOIN chosen USING (run_id)
    GROUP BY c.run_id, floor(ln(greatest(c.step, 1)) * $per_efold)
)
SELECT
    r.run_id, r.name, r.status, r.config_id, r.seed,
    r.n_params, r.n_params_nonembed, r.d_model, r.parameterization, r.lr,
    c.step, c.tokens,
    CASE $convention WHEN 'exact' THEN c.flops_exact WHEN '6n' THEN c.flops_6n ELSE c.flops_6n_nonembed END AS flops,
    CASE $loss WHEN 'eval' THEN c.eval_loss ELSE c.train_loss END AS loss,
    c.eval_loss, c.train_loss, c.lr AS lr_at_step, c.wall_time_s,
    -- the loss of the run's last drawn checkpoint: its final one (kept in every sample)
    last_value(CASE $loss WHEN 'eval' THEN c.eval_loss ELSE c.train_loss END) OVER (
        PARTITION BY c.run_id ORDER BY c.step ROWS BETWEEN UNBOUNDED PRECEDING AND UNBOUNDED FOLLOWING) AS final_loss,
    CASE WHEN r.vocab_size > 0 THEN ln(r.vocab_size) END AS uniform_loss
FROM runs AS r
JOIN sampled AS c USING (run_id)
ORDER BY r.n_params, r.lr, r.seed, r.run_id, c.step

-- name: compute_frontier
-- purpose: The lowest loss reached at each compute level across all checkpoints of all runs of an experiment (Chinchilla approach 1): one row per log-spaced FLOPs bin, with the run and checkpoint that reached it; `on_envelope` marks bins that beat every smaller budget.
-- params:
--   experiment (required): the experiment's name
--   convention = 'exact' (exact | 6n | 6n_nonembed): FLOPs convention of `flops`
--   loss = 'eval' (eval | train): which loss becomes `loss`
--   bins_per_decade = 10: FLOPs bins per factor of ten
--   status = 'any' (finished | running | failed | diverged | pending | any): only runs in this state (a diverged run's early checkpoints are still valid points)
-- columns: bin_flops, flops, loss, run_id, name, step, n_params, n_params_nonembed, tokens, on_envelope
WITH points AS (
    SELECT
        c.run_id, r.name, c.step, r.n_params, r.n_params_nonembed, c.tokens,
        CASE $convention WHEN 'exact' THEN c.flops_exact WHEN '6n' THEN c.flops_6n ELSE c.flops_6n_nonembed END AS flops,
        CASE $loss WHEN 'eval' THEN c.eval_loss ELSE c.train_loss END AS loss
    FROM checkpoints AS c
    JOIN runs AS r USING (run_id)
    WHERE r.experiment = $experiment
      AND ($status = 'any' OR r.status = $status)
),
best AS (
    SELECT
        floor(log10(flops) * $bins_per_decade)::BIGINT AS bin,
        arg_min({'flops': flops, 'loss': loss, 'run_id': run_id, 'name': name, 'step': step,
                 'n_params': n_params, 'n_params_nonembed': n_params_nonembed, 'tokens': tokens}, loss) AS p
    FROM points
    WHERE flops > 0 AND loss IS NOT NULL
    GROUP BY bin
)
SELECT
    power(10, bin / $bins_per_decade) AS bin_flops,
    p.flops, p.loss, p.run_id, p.name, p.step, p.n_params, p.n_params_nonembed, p.tokens,
    -- a bin is on the envelope when no smaller budget reached a lower loss
    p.loss <= min(p.loss) OVER (ORDER BY bin ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW) AS on_envelope
FROM best
ORDER BY bin

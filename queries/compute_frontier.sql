-- name: compute_frontier
-- purpose: The lowest loss reached at each compute level across all checkpoints of all runs of an experiment (Chinchilla approach 1): one row per log-spaced FLOPs bin, with the run and checkpoint that reached it; `on_envelope` marks bins that beat every smaller budget.
-- params:
--   experiment (required): the experiment's name
--   revision = 'current': which runs: current (those the spec's current revision produces; superseded runs left out), all, or a revision hash
--   convention = 'exact' (exact | 6n | 6n_nonembed): FLOPs convention of `flops`
--   loss = 'eval' (eval | train): which loss becomes `loss`
--   bins_per_decade = 10: FLOPs bins per factor of ten
--   status = 'any' (finished | running | failed | diverged | pending | any): only runs in this state (a diverged run's early checkpoints are still valid points)
-- columns: bin_flops, flops, loss, run_id, name, step, n_params, n_params_nonembed, tokens, on_envelope
WITH points AS (
    SELECT
        c.rowid AS row_key,
        CASE $convention WHEN 'exact' THEN c.flops_exact WHEN '6n' THEN c.flops_6n ELSE c.flops_6n_nonembed END AS flops,
        CASE $loss WHEN 'eval' THEN c.eval_loss ELSE c.train_loss END AS loss
    FROM checkpoints AS c
    WHERE c.run_id IN (SELECT run_id FROM runs WHERE experiment = $experiment AND ($status = 'any' OR status = $status)
                       AND run_id IN (SELECT run_id FROM run_selection WHERE revision = $revision))
),
best AS (
    -- the winning checkpoint of each bin, by row key: carrying its columns through the
    -- aggregate would cost more than looking the few winners up afterwards
    SELECT floor(log10(flops) * $bins_per_decade)::BIGINT AS bin, arg_min(row_key, loss) AS row_key
    FROM points
    WHERE flops > 0 AND loss IS NOT NULL
      -- 0 or fewer bins would make every bin NaN or one bin of everything: refuse instead
      AND CASE WHEN $bins_per_decade > 0 THEN true
               ELSE error('bins_per_decade must be > 0 (got ' || $bins_per_decade || ')') END
    GROUP BY bin
),
winners AS (
    SELECT
        b.bin, c.run_id, c.step, c.tokens,
        CASE $convention WHEN 'exact' THEN c.flops_exact WHEN '6n' THEN c.flops_6n ELSE c.flops_6n_nonembed END AS flops,
        CASE $loss WHEN 'eval' THEN c.eval_loss ELSE c.train_loss END AS loss
    FROM best AS b
    JOIN checkpoints AS c ON c.rowid = b.row_key
)
SELECT
    power(10, w.bin / $bins_per_decade) AS bin_flops,
    w.flops, w.loss, w.run_id, r.name, w.step, r.n_params, r.n_params_nonembed, w.tokens,
    -- a bin is on the envelope when no smaller budget reached a lower loss
    w.loss <= min(w.loss) OVER (ORDER BY w.bin ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW) AS on_envelope
FROM winners AS w
JOIN runs AS r USING (run_id)
ORDER BY w.bin

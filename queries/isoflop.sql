-- name: isoflop
-- purpose: IsoFLOP slices (Chinchilla approach 2): each run's final loss grouped by compute budget, the budget taken from the sweep variable `budget_var` in `vars` when the run has it, else from runs whose final compute lies within `tolerance` of each other; `is_min` marks the best run of each budget; `uniform_loss` is ln(vocab_size), which the IsoFLOP figure and frontier leave out runs above.
-- params:
--   experiment (required): the experiment's name
--   revision = 'current': which runs: current (those the spec's current revision produces; superseded runs left out), all, or a revision hash
--   convention = 'exact' (exact | 6n | 6n_nonembed): FLOPs convention of `flops` (and of the grouping)
--   loss = 'eval' (eval | train): which loss becomes `loss`
--   budget_var = 'flop_budget': name of the sweep variable that holds a run's budget
--   tolerance = 0.25: runs without the variable join one budget while each is within this relative gap of the next
--   status = 'finished' (finished | running | failed | diverged | pending | any): only runs in this state
-- columns: budget, run_id, name, n_params, n_params_nonembed, d_model, lr, seed, tokens, flops, loss, rank_in_budget, is_min, n_in_budget, uniform_loss
WITH final AS (
    SELECT
        r.run_id, r.name, r.n_params, r.n_params_nonembed, r.d_model, r.lr, r.seed, c.tokens,
        CASE $convention WHEN 'exact' THEN c.flops_exact WHEN '6n' THEN c.flops_6n ELSE c.flops_6n_nonembed END AS flops,
        CASE $loss WHEN 'eval' THEN c.eval_loss ELSE c.train_loss END AS loss,
        TRY_CAST(json_extract_string(r.vars, '$."' || $budget_var || '"') AS DOUBLE) AS var_budget,
        -- the loss of guessing uniformly over the vocabulary, as in final_loss (NULL without a vocabulary)
        CASE WHEN r.vocab_size > 0 THEN ln(r.vocab_size) END AS uniform_loss
    FROM runs AS r
    JOIN final_checkpoints AS c USING (run_id)
    WHERE r.experiment = $experiment
      AND r.run_id IN (SELECT run_id FROM run_selection WHERE revision = $revision)
      AND ($status = 'any' OR r.status = $status)
),
gaps AS (
    SELECT *, lag(flops) OVER (ORDER BY flops) AS prev_flops
    FROM final
    WHERE var_budget IS NULL AND flops > 0
),
grouped AS (
    SELECT *, sum(CASE WHEN prev_flops IS NULL OR flops > prev_flops * (1 + $tolerance) THEN 1 ELSE 0 END)
                  OVER (ORDER BY flops ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW) AS grp
    FROM gaps
),
budgeted AS (
    SELECT * EXCLUDE (var_budget), var_budget AS budget FROM final WHERE var_budget IS NOT NULL
    UNION ALL
    -- the geometric mean of a group's compute names its budget
    SELECT * EXCLUDE (var_budget, prev_flops, grp), exp(avg(ln(flops)) OVER (PARTITION BY grp)) AS budget
    FROM grouped
)
SELECT
    budget, run_id, name, n_params, n_params_nonembed, d_model, lr, seed, tokens, flops, loss,
    rank() OVER (PARTITION BY budget ORDER BY loss NULLS LAST) AS rank_in_budget,
    loss IS NOT NULL AND loss = min(loss) OVER (PARTITION BY budget) AS is_min,
    count(*) OVER (PARTITION BY budget) AS n_in_budget,
    uniform_loss
FROM budgeted
ORDER BY budget, n_params, run_id

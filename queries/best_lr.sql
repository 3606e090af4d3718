-- name: best_lr
-- purpose: The best learning rate for each width and parameterization (and depth, size, token budget): final loss averaged over seeds per learning rate, then the lowest; `at_edge` warns that the best lr is the smallest or largest tried, so the sweep did not bracket the optimum.
-- params:
--   experiment (required): the experiment's name
--   revision = 'current': which runs: current (those the spec's current revision produces; superseded runs left out), all, or a revision hash
--   loss = 'eval' (eval | train): which loss is compared
--   status = 'finished' (finished | running | failed | diverged | pending | any): only runs in this state
-- columns: parameterization, n_layers, d_model, n_params, tokens_budget, best_lr, best_loss, n_seeds, n_lrs, lr_min, lr_max, at_edge
WITH final AS (
    SELECT r.parameterization, r.n_layers, r.d_model, r.n_params, r.tokens_budget, r.lr,
           CASE $loss WHEN 'eval' THEN c.eval_loss ELSE c.train_loss END AS loss
    FROM runs AS r
    JOIN final_checkpoints AS c USING (run_id)
    WHERE r.experiment = $experiment
      AND r.run_id IN (SELECT run_id FROM run_selection WHERE revision = $revision)
      AND ($status = 'any' OR r.status = $status)
      AND r.lr IS NOT NULL
),
per_lr AS (
    SELECT parameterization, n_layers, d_model, n_params, tokens_budget, lr,
           avg(loss) AS loss, count(*) AS n_seeds
    FROM final
    WHERE loss IS NOT NULL
    GROUP BY ALL
),
ranked AS (
    SELECT *,
           row_number() OVER (w ORDER BY loss, lr) AS rk,
           count(*) OVER w AS n_lrs, min(lr) OVER w AS lr_min, max(lr) OVER w AS lr_max
    FROM per_lr
    WINDOW w AS (PARTITION BY parameterization, n_layers, d_model, n_params, tokens_budget)
)
SELECT parameterization, n_layers, d_model, n_params, tokens_budget,
       lr AS best_lr, loss AS best_loss, n_seeds, n_lrs, lr_min, lr_max,
       n_lrs > 1 AND (lr = lr_min OR lr = lr_max) AS at_edge
FROM ranked
WHERE rk = 1
ORDER BY parameterization, n_layers, d_model, n_params, tokens_budget

-- name: seed_spread
-- purpose: Spread of the final loss across seeds for each configuration (runs that differ only in train.seed or data.seed share a config_id): mean, standard deviation, min, max.
-- params:
--   experiment (required): the experiment's name
--   revision = 'current': which runs: current (those the spec's current revision produces; superseded runs left out), all, or a revision hash
--   loss = 'eval' (eval | train): which loss is summarised
--   status = 'finished' (finished | running | failed | diverged | pending | any): only runs in this state
-- columns: config_id, parameterization, n_layers, d_model, n_params, lr, tokens_budget, n_seeds, seeds, mean_loss, std_loss, min_loss, max_loss
WITH final AS (
    SELECT r.config_id, r.parameterization, r.n_layers, r.d_model, r.n_params, r.lr, r.tokens_budget, r.seed,
           CASE $loss WHEN 'eval' THEN c.eval_loss ELSE c.train_loss END AS loss
    FROM runs AS r
    JOIN final_checkpoints AS c USING (run_id)
    WHERE r.experiment = $experiment
      AND r.run_id IN (SELECT run_id FROM run_selection WHERE revision = $revision)
      AND ($status = 'any' OR r.status = $status)
)
SELECT config_id,
       any_value(parameterization) AS parameterization, any_value(n_layers) AS n_layers,
       any_value(d_model) AS d_model, any_value(n_params) AS n_params, any_value(lr) AS lr,
       any_value(tokens_budget) AS tokens_budget,
       count(loss) AS n_seeds, list(seed ORDER BY seed) AS seeds,
       avg(loss) AS mean_loss, stddev_samp(loss) AS std_loss, min(loss) AS min_loss, max(loss) AS max_loss
FROM final
GROUP BY config_id
ORDER BY n_params, lr, config_id

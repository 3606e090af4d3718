-- name: theory_loss
-- purpose: Closed-form runs' final checkpoint beside the deterministic-equivalent prediction `theory_loss` they log (random features, Maloney, Roberts & Sully 2022): N as n_features, T as samples, the measured loss, the exact population_loss, and theory_missing saying why a run has no usable prediction.
-- params:
--   experiment (required): the experiment's name
--   revision = 'current': which runs: current (those the spec's current revision produces; superseded runs left out), all, or a revision hash
--   loss = 'eval' (eval | train): which loss becomes `loss`
-- columns: run_id, experiment, name, config_id, seed, data_seed, model_kind, nonlinearity, ridge, noise, latent_dim, n_features, samples, n_params, tokens, loss, population_loss, theory_loss, theory_missing
WITH final AS (
    SELECT r.run_id, r.experiment, r.name, r.config_id, r.seed, r.data_seed, r.model_kind,
           r.manifest->>'$.model.nonlinearity' AS nonlinearity,
           TRY_CAST(r.manifest->>'$.model.ridge' AS DOUBLE) AS ridge,
           TRY_CAST(r.manifest->>'$.data.noise' AS DOUBLE) AS noise,
           TRY_CAST(r.manifest->>'$.data.latent_dim' AS BIGINT) AS latent_dim,
           TRY_CAST(r.manifest->>'$.model.n_features' AS BIGINT) AS n_features,
           c.tokens AS samples, r.n_params, c.tokens,
           CASE $loss WHEN 'eval' THEN c.eval_loss ELSE c.train_loss END AS loss,
           p.value AS population_loss, t.value AS theory_loss
    FROM runs AS r
    JOIN final_checkpoints AS c USING (run_id)
    LEFT JOIN metrics AS p ON p.run_id = c.run_id AND p.step = c.step AND p.name = 'population_loss'
    LEFT JOIN metrics AS t ON t.run_id = c.run_id AND t.step = c.step AND t.name = 'theory_loss'
    WHERE r.experiment = $experiment
      AND r.run_id IN (SELECT run_id FROM run_selection WHERE revision = $revision)
      AND r.status = 'finished'
)
SELECT *,
    -- the same conditions under which scaling_db.sources.random_features logs no theory_loss
    CASE
        WHEN theory_loss = 0 THEN 'theory is 0: min(N, T) >= latent_dim'
        WHEN theory_loss IS NOT NULL THEN NULL
        WHEN model_kind IS DISTINCT FROM 'random_features' THEN 'not a random-features model'
        WHEN nonlinearity IS DISTINCT FROM 'linear' THEN 'nonlinear features'
        WHEN ridge > 0 THEN 'ridge > 0'
        WHEN noise > 0 THEN 'label noise'
        WHEN abs(n_features - samples) <= 1 THEN 'interpolation peak (|N - T| <= 1)'
        ELSE 'no theory_loss logged'
    END AS theory_missing
FROM final
ORDER BY samples, n_features, seed, data_seed, run_id

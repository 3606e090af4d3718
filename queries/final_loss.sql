-- name: final_loss
-- purpose: The final checkpoint (highest step) of each run, with size, data, compute and loss in the standard columns the fitter reads by default (n_params, tokens, flops, loss), and the uniform-guess loss ln(vocab_size) that fits leave out runs above.
-- params:
--   experiment (required): the experiment's name
--   revision = 'current': which runs: current (those the spec's current revision produces; superseded runs left out), all, or a revision hash
--   convention = 'exact' (exact | 6n | 6n_nonembed): FLOPs convention of `flops`: exact counts attention (Chinchilla App. F), 6n is 6*N*D, 6n_nonembed is Kaplan's 6*N_nonembed*D
--   loss = 'eval' (eval | train): which loss becomes `loss`
--   status = 'finished' (finished | running | failed | diverged | pending | any): only runs in this state
-- columns: run_id, experiment, name, status, config_id, seed, n_params, n_params_nonembed, n_layers, d_model, parameterization, lr, batch_size, tokens_budget, entropy_rate, step, tokens, flops, loss, eval_loss, train_loss, wall_time_s, uniform_loss
SELECT
    r.run_id, r.experiment, r.name, r.status, r.config_id, r.seed,
    r.n_params, r.n_params_nonembed, r.n_layers, r.d_model, r.parameterization,
    r.lr, r.batch_size, r.tokens_budget, r.entropy_rate,
    c.step, c.tokens,
    CASE $convention WHEN 'exact' THEN c.flops_exact WHEN '6n' THEN c.flops_6n ELSE c.flops_6n_nonembed END AS flops,
    CASE $loss WHEN 'eval' THEN c.eval_loss ELSE c.train_loss END AS loss,
    c.eval_loss, c.train_loss, c.wall_time_s,
    -- the loss of guessing uniformly over the vocabulary: a run above it learned nothing (NULL
    -- where the source has no vocabulary: closed-form percolation and random-features runs)
    CASE WHEN r.vocab_size > 0 THEN ln(r.vocab_size) END AS uniform_loss
FROM runs AS r
JOIN final_checkpoints AS c USING (run_id)
WHERE r.experiment = $experiment
  AND r.run_id IN (SELECT run_id FROM run_selection WHERE revision = $revision)
  AND ($status = 'any' OR r.status = $status)
ORDER BY r.n_params, r.lr, r.seed, r.run_id

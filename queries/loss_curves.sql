-- name: loss_curves
-- purpose: Every checkpoint of every run of an experiment: loss against step, tokens and FLOPs; with each run's final loss (its last checkpoint's, as in final_loss) and the uniform-guess loss ln(vocab_size), by which frontiers leave out whole runs that learned nothing.
-- params:
--   experiment (required): the experiment's name
--   revision = 'current': which runs: current (those the spec's current revision produces; superseded runs left out), all, or a revision hash
--   convention = 'exact' (exact | 6n | 6n_nonembed): FLOPs convention of `flops`
--   loss = 'eval' (eval | train): which loss becomes `loss` (and `final_loss`)
--   status = 'any' (finished | running | failed | diverged | pending | any): only runs in this state
-- columns: run_id, name, status, config_id, seed, n_params, n_params_nonembed, d_model, parameterization, lr, step, tokens, flops, loss, eval_loss, train_loss, lr_at_step, wall_time_s, final_loss, uniform_loss
SELECT
    r.run_id, r.name, r.status, r.config_id, r.seed,
    r.n_params, r.n_params_nonembed, r.d_model, r.parameterization, r.lr,
    c.step, c.tokens,
    CASE $convention WHEN 'exact' THEN c.flops_exact WHEN '6n' THEN c.flops_6n ELSE c.flops_6n_nonembed END AS flops,
    CASE $loss WHEN 'eval' THEN c.eval_loss ELSE c.train_loss END AS loss,
    c.eval_loss, c.train_loss, c.lr AS lr_at_step, c.wall_time_s,
    -- the run's final loss, on each of its rows (the uniform-guess rule judges whole runs): the
    -- loss at its highest step, NULL included, as final_checkpoints has it; a window over this
    -- experiment's rows, where joining that view would aggregate every experiment's checkpoints
    last_value(CASE $loss WHEN 'eval' THEN c.eval_loss ELSE c.train_loss END) OVER (
        PARTITION BY c.run_id ORDER BY c.step ROWS BETWEEN UNBOUNDED PRECEDING AND UNBOUNDED FOLLOWING) AS final_loss,
    -- the loss of guessing uniformly over the vocabulary, as in final_loss (NULL without a vocabulary)
    CASE WHEN r.vocab_size > 0 THEN ln(r.vocab_size) END AS uniform_loss
FROM runs AS r
JOIN checkpoints AS c USING (run_id)
WHERE r.experiment = $experiment
  AND r.run_id IN (SELECT run_id FROM run_selection WHERE revision = $revision)
  AND ($status = 'any' OR r.status = $status)
ORDER BY r.n_params, r.lr, r.seed, r.run_id, c.step

"""Measured training speed of finished runs, read from the result database for plan estimates.

One `ThroughputSample` per finished run that recorded its device: the trainer's own tokens/s
(steady-state training, evaluation excluded: the tokens of every checkpoint interval but the
first over their training time; the first holds the process's first-use costs, and log-spaced
checkpoints make early intervals the majority, so a median over intervals would be mostly
warm-up; the median when intervals lack their tokens), and the run's wall time
on the trainer's clock at its last checkpoint (training steps, evaluation and records). The
time from `started_at` to the trainer's start (importing torch in a fresh worker, building the
data source) is left out: it is paid once per worker process, not once per run. The estimator
that uses them (`scaling_db.spec.plan.estimate_run`) is pure and lives with the plan.
"""

from __future__ import annotations

from scaling_db.errors import StoreError
from scaling_db.spec.plan import ThroughputSample
from scaling_db.store.database import open_store
from scaling_db.workspace import Workspace

#: Seconds a dry run waits for a writer (a sweep loading its runs) before estimating without.
READ_TIMEOUT_S = 1.0

_SQL = """
SELECT r.run_id, r.device, coalesce(r.host, ''), coalesce(r.model_kind, ''), r.d_model, r.n_layers,
       TRY_CAST(r.manifest->>'$.flops_per_token.exact' AS DOUBLE), c.tokens, c.tokens_per_s,
       c.wall_time_s, r.tokens_budget // nullif(r.steps, 0)
FROM runs AS r
JOIN (SELECT run_id, max(tokens) AS tokens, max(wall_time_s) AS wall_time_s,
             coalesce(sum(seg_tokens) FILTER (WHERE NOT first AND tokens_per_s > 0)
                        / nullif(sum(seg_tokens / tokens_per_s) FILTER (WHERE NOT first AND tokens_per_s > 0), 0),
                      median(tokens_per_s)) AS tokens_per_s
      FROM (SELECT run_id, tokens, wall_time_s, tokens_per_s,
                   tokens - coalesce(lag(tokens) OVER w, 0) AS seg_tokens, row_number() OVER w = 1 AS first
            FROM checkpoints WINDOW w AS (PARTITION BY run_id ORDER BY step))
      GROUP BY run_id) AS c USING (run_id)
WHERE r.status = 'finished' AND r.device IS NOT NULL AND c.tokens > 0 AND c.wall_time_s > 0
ORDER BY r.run_id
"""


def measured_throughput(workspace: Workspace) -> list[ThroughputSample]:
    """Every finished run's measured speed; [] when there is no database or a writer holds it."""
    if not workspace.db_path.exists():
        return []
    try:
        with open_store(workspace, read_only=True, lock_timeout_s=READ_TIMEOUT_S) as con:
            rows = con.execute(_SQL).fetchall()
    except StoreError:
        return []
    return [
        ThroughputSample(run_id=r[0], device=r[1], host=r[2], model_kind=r[3], d_model=r[4], n_layers=r[5],
                         flops_per_token=r[6], tokens=int(r[7]), tokens_per_s=r[8], wall_time_s=float(r[9]),
                         tokens_per_step=r[10])
        for r in rows
    ]

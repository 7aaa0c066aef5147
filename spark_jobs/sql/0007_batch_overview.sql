-- What an operator sees of each batch, and failures recorded from any stage.
--
-- etl_batches.status keeps its meaning for the order rules (staged = applied,
-- not published: it blocks later batches). What the operator is shown is the
-- state of the batch's last attempt: a staged batch whose gate or publish
-- failed, or a batch whose run failed, shows as `failed`, with the one-line
-- reason its run recorded. `make status` and the Batches page read this view.

-- The batch lock's key, one home: the job takes it for a whole run (session
-- lock), etl_record_failure takes it to know that no run is alive.
CREATE OR REPLACE FUNCTION etl_batch_lock_key() RETURNS bigint
LANGUAGE sql IMMUTABLE AS $$ SELECT 4154833532::bigint $$;

-- A DAG stage failed for a batch: record it on the run of this attempt (the
-- DAG run started at p_since). Returns what was recorded, for the task log.
--  * the attempt's run is staged (the gate or the publish refused it): it
--    becomes failed with p_error; the batch stays staged (applied, blocking);
--  * the attempt's run is still running: if no process holds the batch lock
--    its process is gone (killed, out of memory) and it becomes failed with
--    p_error; else it is alive and records its own end;
--  * the attempt's run already failed (the job said why): left as it is;
--  * no run of this attempt (a stage before the job failed): a failed run
--    row with p_error, and the batch, if the store did not know it, as failed.
CREATE OR REPLACE FUNCTION etl_record_failure(p_batch_id text, p_since timestamptz, p_error text)
RETURNS text
LANGUAGE plpgsql AS $$
DECLARE
    r etl_batch_runs%ROWTYPE;
BEGIN
    SELECT * INTO r FROM etl_batch_runs
     WHERE batch_id = p_batch_id AND started_at >= p_since ORDER BY run_id DESC LIMIT 1;
    IF FOUND AND r.status = 'staged' THEN
        UPDATE etl_batch_runs SET status = 'failed', error = p_error, finished_at = now()
         WHERE run_id = r.run_id;
        RETURN format('run %s (staged) marked failed', r.run_id);
    ELSIF FOUND AND r.status = 'running' THEN
        IF NOT pg_try_advisory_xact_lock(etl_batch_lock_key()) THEN
            RETURN format('run %s is still running; it records its own end', r.run_id);
        END IF;
        UPDATE etl_batch_runs SET status = 'failed', error = p_error, finished_at = now()
         WHERE run_id = r.run_id;
        UPDATE etl_batches SET status = 'failed', updated_at = now()
         WHERE batch_id = p_batch_id AND applied_run_id IS NULL AND status = 'new';
        RETURN format('run %s (its process is gone) marked failed', r.run_id);
    ELSIF FOUND AND r.status = 'failed' THEN
        RETURN format('run %s had recorded its failure', r.run_id);
    ELSIF FOUND THEN
        RETURN format('run %s is %s; nothing recorded', r.run_id, r.status);
    END IF;
    INSERT INTO etl_batches (batch_id, status) VALUES (p_batch_id, 'failed') ON CONFLICT (batch_id) DO NOTHING;
    INSERT INTO etl_batch_runs (batch_id, status, finished_at, error)
         VALUES (p_batch_id, 'failed', now(), p_error) RETURNING * INTO r;
    RETURN format('failed run %s recorded', r.run_id);
END
$$;

-- A publish clears the error of a run that failed at the gate and was let
-- through on a second try (the operator raised the limit and cleared it).
CREATE OR REPLACE FUNCTION etl_mark_published(p_batch_id text, p_run_id bigint) RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
    UPDATE etl_batches SET status = 'published', published_run_id = p_run_id, updated_at = now()
     WHERE batch_id = p_batch_id AND applied_run_id = p_run_id;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'batch %: run % is not the applied run; not publishing', p_batch_id, p_run_id
              USING ERRCODE = 'P0001';
    END IF;
    UPDATE etl_batch_runs SET status = 'published', error = NULL, finished_at = now() WHERE run_id = p_run_id;
END
$$;

-- One row per batch: its last run, the state shown, the run's first error
-- line, what the operator does next (the one place that says it: `make
-- status`, the Batches page and the DAG run's note read it), and the metrics.
CREATE VIEW etl_batch_overview AS
SELECT o.*,
       CASE WHEN o.state <> 'failed' THEN NULL
            WHEN o.blocks_later THEN format('its store changes are applied and hold back later batches: fix the '
                 'cause (fixed files into the landing folder''s %1$s/) and `make run BATCH=%1$s`, or undo it with '
                 '`make abandon BATCH=%1$s`', o.batch_id)
            ELSE format('nothing of it was applied: fix the cause (fixed files into the landing folder''s %1$s/) '
                 'and `make run BATCH=%1$s`, or drop it with `make abandon BATCH=%1$s`', o.batch_id)
       END AS next_step
FROM (
SELECT b.batch_id,
       CASE WHEN r.status = 'failed' AND b.status IN ('new', 'failed', 'staged') THEN 'failed'
            WHEN r.status = 'running' THEN 'running'
            ELSE b.status END                                        AS state,
       b.status                                                      AS batch_status,
       (b.applied_run_id IS NOT NULL AND b.status = 'staged')        AS blocks_later,
       r.run_id,
       r.status                                                      AS run_state,
       r.started_at,
       r.finished_at,
       extract(epoch FROM r.finished_at - r.started_at)::numeric(12, 1) AS seconds,
       nullif(split_part(btrim(coalesce(r.error, ''), E' \n'), E'\n', 1), '') AS reason,
       m.published,
       m.pending_in,
       m.pending_out,
       m.pending_resolved,
       m.transactions_input,
       m.transactions_duplicate,
       m.subscribers_input,
       m.transactions_rejected,
       m.subscribers_rejected
FROM etl_batches b
JOIN LATERAL (SELECT * FROM etl_batch_runs x WHERE x.batch_id = b.batch_id ORDER BY run_id DESC LIMIT 1) r
  ON true
LEFT JOIN etl_batch_metrics m ON m.run_id = r.run_id
) o;

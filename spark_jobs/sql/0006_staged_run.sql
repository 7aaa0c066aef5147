-- A batch's applied run as the DAG's quality gate reads it (status, run id,
-- metrics): one SQL function, so the DAG's tasks hold no store SQL of their own.
CREATE OR REPLACE FUNCTION etl_staged_run(p_batch_id text)
RETURNS TABLE (status text, applied_run_id bigint, metrics jsonb)
LANGUAGE sql STABLE AS $$
    SELECT b.status, b.applied_run_id, r.metrics
      FROM etl_batches b LEFT JOIN etl_batch_runs r ON r.run_id = b.applied_run_id
     WHERE b.batch_id = p_batch_id
$$;

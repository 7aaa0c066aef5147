-- Marking a batch published is one SQL function, so the Spark job's own
-- publish and the DAG's HDFS publish step (a BashOperator that renames the
-- staged partitions with WebHDFS) record it the same way.
CREATE OR REPLACE FUNCTION etl_mark_published(p_batch_id text, p_run_id bigint) RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
    UPDATE etl_batches SET status = 'published', published_run_id = p_run_id, updated_at = now()
     WHERE batch_id = p_batch_id AND applied_run_id = p_run_id;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'batch %: run % is not the applied run; not publishing', p_batch_id, p_run_id
              USING ERRCODE = 'P0001';
    END IF;
    UPDATE etl_batch_runs SET status = 'published', finished_at = now() WHERE run_id = p_run_id;
END
$$;

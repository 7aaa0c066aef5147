-- The input files a run read: bytes of each (as the job saw them) and, when
-- the DAG ingested them, the SHA-256 that wait_for_landing computed on the
-- landing copy (raw/<batch>/_inputs.json). Also in the partition's _metrics.json.
ALTER TABLE etl_batch_runs ADD COLUMN inputs jsonb;

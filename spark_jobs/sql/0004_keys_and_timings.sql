-- The sub_ids a batch needs from the store (its subscribers and the
-- subscribers of its valid transactions), copied in before the store is read,
-- so a batch reads only its own rows of a store of any size. Not state: a
-- run's keys are dropped when it starts over or applies.
CREATE UNLOGGED TABLE etl_stage_keys (
    run_id bigint NOT NULL,
    sub_id text NOT NULL,
    PRIMARY KEY (run_id, sub_id)
);

-- Seconds per step of each run (session start, read, store read, ... apply,
-- publish), as in the partition's _metrics.json.
ALTER TABLE etl_batch_runs ADD COLUMN timings jsonb;

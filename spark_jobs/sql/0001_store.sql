-- Subscriber store, pending transactions and batch bookkeeping.
-- Every state change carries the run (and batch) that made it, so the
-- latest run of a batch can be undone exactly (DATA_CONTRACT "Reruns").

CREATE TABLE subscribers (
    sub_id          text PRIMARY KEY,
    activation_date date NOT NULL,
    row_key         text NOT NULL,
    batch_id        text NOT NULL,   -- batch whose run made the current value
    run_id          bigint NOT NULL,
    updated_at      timestamptz NOT NULL DEFAULT now()
);

-- One row per subscriber a run inserted or updated; old_* is NULL for an insert.
CREATE TABLE subscriber_changes (
    run_id              bigint NOT NULL,
    batch_id            text NOT NULL,
    sub_id              text NOT NULL,
    old_activation_date date,
    old_batch_id        text,
    old_run_id          bigint,
    new_activation_date date NOT NULL,
    PRIMARY KEY (run_id, sub_id)
);

-- Valid transactions whose subscriber is not (yet) known. Rows are never
-- deleted by a batch: removal is recorded (removed_run_id) so it can be undone.
CREATE TABLE pending_transactions (
    pending_id      bigserial PRIMARY KEY,
    ts              timestamptz NOT NULL,
    sub_id          text NOT NULL,
    amount          numeric(18,4) NOT NULL,
    channel         text NOT NULL,
    record          text NOT NULL,   -- JSON array of the original fields
    added_batch_id  text NOT NULL,
    added_run_id    bigint NOT NULL,
    removed_batch_id text,
    removed_run_id  bigint,
    removed_as      text             -- published | before_activation | unmatched_expired | duplicate
);
CREATE INDEX pending_open_idx ON pending_transactions (sub_id) WHERE removed_run_id IS NULL;
CREATE INDEX pending_added_run_idx ON pending_transactions (added_run_id);
CREATE INDEX pending_removed_run_idx ON pending_transactions (removed_run_id);

-- The state of each batch. applied_run_id: the run whose changes are in the
-- store now (NULL: none). status: failed (nothing applied), staged (applied,
-- not yet published: blocks later batches), published, abandoned.
CREATE TABLE etl_batches (
    batch_id         text PRIMARY KEY,
    status           text NOT NULL CHECK (status IN ('new', 'failed', 'staged', 'published', 'abandoned')),
    applied_run_id   bigint,
    published_run_id bigint,
    updated_at       timestamptz NOT NULL DEFAULT now()
);

-- One row per run of a batch, with its metrics (DATA_CONTRACT "Outputs").
CREATE TABLE etl_batch_runs (
    run_id      bigserial PRIMARY KEY,
    batch_id    text NOT NULL,
    started_at  timestamptz NOT NULL DEFAULT now(),
    finished_at timestamptz,
    status      text NOT NULL CHECK (status IN ('running', 'failed', 'staged', 'published', 'abandoned')),
    forced      boolean NOT NULL DEFAULT false,
    error       text,
    metrics     jsonb
);
CREATE INDEX etl_batch_runs_batch_idx ON etl_batch_runs (batch_id);

-- Landing tables for the Spark job's bulk writes (JDBC); applied and emptied
-- inside the batch's one transaction. Not state: safe to truncate.
CREATE UNLOGGED TABLE etl_stage_subscribers (
    run_id          bigint NOT NULL,
    sub_id          text NOT NULL,
    activation_date date NOT NULL
);
CREATE UNLOGGED TABLE etl_stage_pending_new (
    run_id   bigint NOT NULL,
    ts       timestamptz NOT NULL,
    sub_id   text NOT NULL,
    amount   numeric(18,4) NOT NULL,
    channel  text NOT NULL,
    record   text NOT NULL
);
CREATE UNLOGGED TABLE etl_stage_pending_removed (
    run_id     bigint NOT NULL,
    pending_id bigint NOT NULL,
    removed_as text NOT NULL
);

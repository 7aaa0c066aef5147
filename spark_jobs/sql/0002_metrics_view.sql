-- Flat view of the per-run metrics for dashboards and ad-hoc queries.
CREATE VIEW etl_batch_metrics AS
SELECT r.run_id,
       r.batch_id,
       r.status,
       r.started_at,
       r.finished_at,
       (r.metrics ->> 'subscribers_input')::bigint     AS subscribers_input,
       (r.metrics ->> 'subscribers_duplicate')::bigint AS subscribers_duplicate,
       (r.metrics ->> 'subscribers_inserted')::bigint  AS subscribers_inserted,
       (r.metrics ->> 'subscribers_updated')::bigint   AS subscribers_updated,
       (r.metrics ->> 'subscribers_unchanged')::bigint AS subscribers_unchanged,
       (r.metrics ->> 'transactions_input')::bigint    AS transactions_input,
       (r.metrics ->> 'pending_in')::bigint            AS pending_in,
       (r.metrics ->> 'transactions_duplicate')::bigint AS transactions_duplicate,
       (r.metrics ->> 'pending_resolved')::bigint      AS pending_resolved,
       (r.metrics ->> 'published')::bigint             AS published,
       (r.metrics ->> 'pending_out')::bigint           AS pending_out,
       r.metrics -> 'subscribers_rejected'             AS subscribers_rejected,
       r.metrics -> 'transactions_rejected'            AS transactions_rejected
FROM etl_batch_runs r;

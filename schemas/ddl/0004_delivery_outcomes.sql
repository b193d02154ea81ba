-- driftline schema, version 4: document the delivery log's columns as the notifier writes them.
--
-- The SQL comment on alert_deliveries.outcome in 0001_init.sql (accepted | retry | rejected |
-- dead_letter) predates the notifier and is wrong; an applied migration cannot be edited, so
-- the authoritative description is now a column COMMENT, shown by DESCRIBE and system.columns.
-- The values are streams/notifier/records.py `Outcome` (tests/unit/test_store_migrations.py
-- checks that the two agree). ALTER ... COMMENT COLUMN only changes metadata: idempotent.

ALTER TABLE driftline.alert_deliveries
    COMMENT COLUMN outcome 'delivered (2xx) | retrying (429, 5xx or network error: tried again) | failed_permanent (other HTTP status, or the event could not be built or sent: not retried) | gave_up (retries exhausted) | unrouted (no route matched) | coalesced (not sent: superseded while queued, or already delivered)',
    COMMENT COLUMN status_code 'HTTP status; 0 when no response arrived (network error, timeout) or no request was made (unrouted, coalesced)',
    COMMENT COLUMN target '<route name>@<URL host>: never a routing key, never a URL path';

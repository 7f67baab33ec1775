-- Which billing months a checkpoint's partition keeps running totals for: the month of the newest
-- receive time folded, and the oldest open month (0: every month). Older months are closed: their
-- figures are the exact recount of usage_events.
ALTER TABLE aggregate_checkpoints ADD COLUMN IF NOT EXISTS newest_period UInt32 DEFAULT 0;
ALTER TABLE aggregate_checkpoints ADD COLUMN IF NOT EXISTS open_from UInt32 DEFAULT 0;

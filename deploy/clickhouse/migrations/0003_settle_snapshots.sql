-- Snapshots of the settle worker's billing state, one written after each settlement, so a restart
-- replays only the journal after the latest one instead of every event since the beginning.
-- meta is JSON (where the snapshot sits in the journal, the usage, billing, accounts and ledger
-- topics); state is the gzip of settle.Replayer.Snapshot. The worker keeps the latest two.
CREATE TABLE IF NOT EXISTS settle_snapshots
(
    journal_topic   LowCardinality(String),
    journal_offset  Int64 COMMENT 'the last journal record the state holds (a tick, or the end at a recovery)',
    settled_at      DateTime64(9, 'UTC') COMMENT 'the settlement instant of that tick',
    meta            String,
    state           String CODEC(NONE),
    written_at      DateTime64(3, 'UTC')
)
ENGINE = ReplacingMergeTree
ORDER BY (journal_topic, journal_offset);

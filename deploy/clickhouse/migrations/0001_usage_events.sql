-- Raw usage, one row per accepted usage event, written by `tally sink`.
-- The sorting key ends in the event id, so the identity of SPEC §4 (account, service, billing
-- month, id) is the key: ReplacingMergeTree collapses duplicates of any age within the month.
-- version prefers the smallest Kafka offset, the first copy received ("the first received counts";
-- an account's events all go to one partition, so offsets order its copies).
CREATE TABLE IF NOT EXISTS usage_events
(
    account         String,
    service         LowCardinality(String),
    period          UInt32 COMMENT 'billing month YYYYMM in the billing time zone',
    id              String,
    event_time      DateTime64(9, 'UTC'),
    calls           UInt32,
    received_at     DateTime64(3, 'UTC') COMMENT 'when ingest accepted it (the Kafka record time)',
    kafka_topic     LowCardinality(String),
    kafka_partition Int32,
    kafka_offset    Int64,
    version         UInt64 MATERIALIZED toUInt64(9223372036854775807 - kafka_offset)
)
ENGINE = ReplacingMergeTree(version)
PARTITION BY period
ORDER BY (account, service, period, id)
SETTINGS non_replicated_deduplication_window = 1000;

-- How far the sink has written each partition: the truth it resumes from after a crash. A row is
-- written only after the batch's rows (and dead letters) are durable.
CREATE TABLE IF NOT EXISTS sink_progress
(
    consumer        LowCardinality(String),
    kafka_topic     LowCardinality(String),
    kafka_partition Int32,
    next_offset     Int64,
    rows            UInt32,
    dead_letters    UInt32,
    written_at      DateTime64(3, 'UTC')
)
ENGINE = ReplacingMergeTree(next_offset)
ORDER BY (consumer, kafka_topic, kafka_partition);

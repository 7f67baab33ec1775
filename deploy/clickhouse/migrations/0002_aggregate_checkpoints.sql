-- Running totals of `tally aggregate`, checkpointed per usage partition. Each checkpoint writes
-- the totals that changed since the previous one, tagged with the offset they include, then one
-- row in aggregate_checkpoints. Loading takes, per key, the latest total at or before the last
-- committed offset, so rows of a checkpoint cut short by a crash are never read.
CREATE TABLE IF NOT EXISTS aggregate_totals
(
    consumer        LowCardinality(String),
    kafka_topic     LowCardinality(String),
    kafka_partition Int32,
    next_offset     Int64,
    account         String,
    service         LowCardinality(String),
    period          UInt32,
    calls           UInt64
)
ENGINE = MergeTree
ORDER BY (consumer, kafka_topic, kafka_partition, account, service, period, next_offset);

CREATE TABLE IF NOT EXISTS aggregate_checkpoints
(
    consumer        LowCardinality(String),
    kafka_topic     LowCardinality(String),
    kafka_partition Int32,
    next_offset     Int64,
    keys            UInt32,
    written_at      DateTime64(3, 'UTC')
)
ENGINE = ReplacingMergeTree(next_offset)
ORDER BY (consumer, kafka_topic, kafka_partition);

-- Offset ranges of the usage topic that Kafka deleted before the sink wrote them (retention
-- overtook a sink or a ClickHouse that was down or behind): accepted usage that is not in
-- usage_events. The sink writes a row when it finds one and stops the partition; an operator's
-- `tally gaps ack` writes it again, acknowledged, and moves sink_progress past the range. The
-- audit of the usage topic counts these offsets as lost, never as present.
CREATE TABLE IF NOT EXISTS usage_gaps
(
    consumer        LowCardinality(String),
    kafka_topic     LowCardinality(String),
    kafka_partition Int32,
    from_offset     Int64,
    to_offset       Int64 COMMENT 'first offset after the range',
    detected_at     DateTime64(3, 'UTC'),
    acknowledged_at DateTime64(3, 'UTC') DEFAULT toDateTime64(0, 3, 'UTC'),
    acknowledged_by String DEFAULT '',
    note            String DEFAULT ''
)
ENGINE = ReplacingMergeTree(acknowledged_at)
ORDER BY (consumer, kafka_topic, kafka_partition, from_offset);

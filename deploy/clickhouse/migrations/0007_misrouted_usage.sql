-- Account-months whose usage arrived on a partition of the usage topic other than the one ingest
-- routes the account to (murmur2 of the account): a producer partitioning some other way. The
-- aggregator's running totals are per partition, so such an account-month's total on any one
-- partition is partial and a retry on another partition counts twice; every aggregator reads
-- this table and answers those account-months from the exact recount of usage_events instead,
-- and publishes no total of them on the totals topic. Bills are unaffected (settlement recounts).
CREATE TABLE IF NOT EXISTS misrouted_usage
(
    account         String,
    period          UInt32 COMMENT 'billing month YYYYMM',
    kafka_partition Int32 COMMENT 'where a record of it arrived',
    home_partition  Int32 COMMENT 'where ingest routes the account',
    first_offset    Int64,
    detected_at     DateTime64(3, 'UTC')
)
ENGINE = ReplacingMergeTree
ORDER BY (account, period, kafka_partition);

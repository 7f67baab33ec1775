-- What Tally billed, for questions in SQL (revenue per service and month, holds, suspensions):
-- `tally billsink` fills these from the billing topic. Every event id is deterministic (SPEC §4)
-- and a redelivered or re-read event carries the same bytes, so each table is a
-- ReplacingMergeTree keyed by the identity of its rows: copies collapse, and queries read with
-- FINAL (or GROUP BY the key) to see each once even before a merge. Amounts are exact decimals
-- (cents; unit prices to 10 places), never floats.
CREATE TABLE IF NOT EXISTS bills
(
    bill_id         String,
    account         String,
    period          UInt32 COMMENT 'billed month YYYYMM',
    currency        LowCardinality(String),
    total           Decimal(38, 2),
    issued_at       DateTime64(3, 'UTC') COMMENT 'the event time: the settlement instant',
    kafka_partition Int32,
    kafka_offset    Int64
)
ENGINE = ReplacingMergeTree
ORDER BY (account, period)
SETTINGS non_replicated_deduplication_window = 1000;

-- One row per service of a bill (a bill's lines, SPEC §4 tally.bill.issued.v1 data.lines).
CREATE TABLE IF NOT EXISTS bill_lines
(
    bill_id        String,
    account        String,
    period         UInt32,
    service        LowCardinality(String),
    activated      Bool,
    calls          Int64,
    free_calls     Int64,
    prepaid_calls  Int64,
    billable_calls Int64,
    tier           UInt16,
    unit_price     Decimal(38, 10),
    amount         Decimal(38, 2),
    issued_at      DateTime64(3, 'UTC')
)
ENGINE = ReplacingMergeTree
ORDER BY (account, period, service)
SETTINGS non_replicated_deduplication_window = 1000;

-- Late usage re-pricing an already billed month: charged (or credited, negative) on the bill of
-- bill_period for adjusted_period.
CREATE TABLE IF NOT EXISTS bill_adjustments
(
    bill_id         String,
    account         String,
    bill_period     UInt32,
    adjusted_period UInt32,
    service         LowCardinality(String),
    calls_before    Int64,
    calls_after     Int64,
    amount          Decimal(38, 2),
    issued_at       DateTime64(3, 'UTC')
)
ENGINE = ReplacingMergeTree
ORDER BY (account, bill_period, adjusted_period, service)
SETTINGS non_replicated_deduplication_window = 1000;

-- Hold requests (one per try: the n-th retry after a recharge has its own event id) and
-- releases. for_period and basis_period are 0 on releases.
CREATE TABLE IF NOT EXISTS holds
(
    event_id     String,
    kind         Enum8('requested' = 1, 'released' = 2),
    hold_id      String,
    account      String,
    amount       Decimal(38, 2),
    for_period   UInt32,
    basis_period UInt32,
    at           DateTime64(3, 'UTC')
)
ENGINE = ReplacingMergeTree
ORDER BY (account, hold_id, event_id)
SETTINGS non_replicated_deduplication_window = 1000;

-- Suspensions and resumptions, in the order Tally decided them.
CREATE TABLE IF NOT EXISTS account_status_changes
(
    event_id String,
    account  String,
    status   Enum8('suspended' = 1, 'resumed' = 2),
    reason   LowCardinality(String),
    at       DateTime64(3, 'UTC')
)
ENGINE = ReplacingMergeTree
ORDER BY (account, event_id)
SETTINGS non_replicated_deduplication_window = 1000;

-- flows_errors: Kafka records the Kafka engine could not decode (not a
-- FlowMessage, truncated, an enum value this schema does not know). With
-- kafka_handle_error_mode = 'stream' they arrive here instead of stopping
-- the consumer; RawMessage keeps the record for inspection.
--
-- Retention: 7 days. Change it with:
--   ALTER TABLE flows_errors MODIFY TTL TimeReceived + INTERVAL 30 DAY;
CREATE TABLE IF NOT EXISTS flows_errors
(
    TimeReceived DateTime('UTC')        CODEC(DoubleDelta, ZSTD(1)),
    Topic        LowCardinality(String),
    Partition    UInt64,
    Offset       UInt64,
    Error        String                 CODEC(ZSTD(1)),
    RawMessage   String                 CODEC(ZSTD(1))
)
ENGINE = MergeTree
PARTITION BY toDate(TimeReceived)
ORDER BY TimeReceived
TTL TimeReceived + INTERVAL 7 DAY
SETTINGS ttl_only_drop_parts = 1;

-- alerts: the detector's alerts (Kafka topic "alerts", one JSON record per
-- event of an attack: start, update, end), for the dashboards' annotations
-- and "Attacks" tables.
--
-- Path: alerts_kafka (Kafka engine, JSONEachRow) -> alerts_mv -> alerts;
-- records that are not an alert go to flows_errors (alerts_rejected_mv).
--
-- The Kafka engine is at least once (see clickhouse.md): after a crash a
-- block can be stored twice. alerts is a ReplacingMergeTree keyed by the
-- alert's identity (ID, Event, At), so a copy disappears at the next merge;
-- queries that must not count one twice read it with FINAL (the table is
-- small: a few records per attack).
--
-- Retention: 365 days. Change it with:
--   ALTER TABLE alerts MODIFY TTL toDate(At) + INTERVAL 730 DAY;
CREATE TABLE IF NOT EXISTS alerts
(
    At            DateTime64(9, 'UTC'),            -- event time of the event (the alert's "at")
    Event         Enum8('start' = 1, 'update' = 2, 'end' = 3),
    ID            String,                          -- the same for every event of one attack
    Target        String,                          -- address, or network name for a network's aggregate
    TargetNet     LowCardinality(String),
    Vector        LowCardinality(String),
    Bps           UInt64,
    Pps           UInt64,
    Flows         UInt64,
    TopSrcAddr    Array(String),
    TopSrcAS      Array(UInt32),
    TopSrcCountry Array(LowCardinality(String)),
    Exporters     Array(LowCardinality(String)),
    Started       Nullable(DateTime64(9, 'UTC')),  -- update and end: when the attack began
    PeakBps       UInt64,
    PeakPps       UInt64,
    PeakFlows     UInt64,
    DurationS     Float64,                         -- end: how long it lasted
    Topic         LowCardinality(String),
    Partition     UInt64,
    Offset        UInt64
)
ENGINE = ReplacingMergeTree
PARTITION BY toYYYYMM(At)
ORDER BY (ID, Event, At)
TTL toDate(At) + INTERVAL 365 DAY
SETTINGS ttl_only_drop_parts = 1;

-- Columns named as the JSON keys of detector.Alert. Times arrive as
-- RFC3339 strings and are parsed in the view, so a malformed one is an
-- error row, not a stalled consumer.
CREATE TABLE IF NOT EXISTS alerts_kafka
(
    event           String,
    id              String,
    target          String,
    target_net      String,
    vector          String,
    at              String,
    bps             UInt64,
    pps             UInt64,
    flows           UInt64,
    top_src_addr    Array(String),
    top_src_as      Array(UInt32),
    top_src_country Array(String),
    exporters       Array(String),
    started         String,
    peak_bps        UInt64,
    peak_pps        UInt64,
    peak_flows      UInt64,
    duration_s      Float64
)
ENGINE = Kafka
SETTINGS
    kafka_broker_list = 'kafka:9092',
    kafka_topic_list = 'alerts',
    kafka_group_name = 'clickhouse-alerts',
    kafka_format = 'JSONEachRow',
    kafka_num_consumers = 1,
    -- Alerts are few: write them within a second.
    kafka_flush_interval_ms = 1000,
    kafka_handle_error_mode = 'stream';

CREATE MATERIALIZED VIEW IF NOT EXISTS alerts_mv TO alerts AS
SELECT
    parseDateTime64BestEffort(at, 9, 'UTC') AS At,
    CAST(event, 'Enum8(\'start\' = 1, \'update\' = 2, \'end\' = 3)') AS Event,
    id AS ID,
    target AS Target,
    target_net AS TargetNet,
    vector AS Vector,
    bps AS Bps,
    pps AS Pps,
    flows AS Flows,
    top_src_addr AS TopSrcAddr,
    top_src_as AS TopSrcAS,
    top_src_country AS TopSrcCountry,
    exporters AS Exporters,
    parseDateTime64BestEffortOrNull(started, 9, 'UTC') AS Started,
    peak_bps AS PeakBps,
    peak_pps AS PeakPps,
    peak_flows AS PeakFlows,
    duration_s AS DurationS,
    _topic AS Topic,
    _partition AS Partition,
    _offset AS Offset
FROM alerts_kafka
WHERE _error = '' AND event IN ('start', 'update', 'end') AND parseDateTime64BestEffortOrNull(at, 9, 'UTC') IS NOT NULL;

CREATE MATERIALIZED VIEW IF NOT EXISTS alerts_rejected_mv TO flows_errors AS
SELECT
    now() AS TimeReceived,
    _topic AS Topic,
    _partition AS Partition,
    _offset AS Offset,
    if(_error != '', _error,
       if(event NOT IN ('start', 'update', 'end'), 'invalid_field: event ' || event || ' is not start, update or end',
          'invalid_field: at ' || at || ' is not an RFC3339 time')) AS Error,
    if(_error != '', _raw_message, '') AS RawMessage
FROM alerts_kafka
WHERE _error != '' OR event NOT IN ('start', 'update', 'end') OR parseDateTime64BestEffortOrNull(at, 9, 'UTC') IS NULL;

-- GENERATED from compose/clickhouse/10_flows_raw.sql by
--   go test ./compose/clickhouse -run TestClusterSchemaUpToDate -update
-- Do not edit: edit the single-node file, then regenerate. The test fails
-- while this file differs from what the single-node file gives.
--
-- Cluster (flows_cluster, docs/clickhouse.md "Cluster"): every MergeTree
-- table T of the single-node file is T_local here, Replicated, on every
-- node, and T is a Distributed table over T_local of every shard, so
-- queries keep the names. Views read and write the T_local tables of
-- their own node. The comments below are the single-node file's: read T
-- in them as the whole cluster, and run ALTER on T_local ON CLUSTER
-- flows_cluster.

-- flows_raw: one row per flow, as the collector sent it.
--
-- Bytes and Packets are the SAMPLED counts, as sent, next to SamplingRate;
-- multiply by greatest(SamplingRate, 1) for traffic estimates (exporters
-- without sampling send 0). The rollups (flows_5m, flows_1h) store the
-- scaled values already.
--
-- Addresses are IPv6; IPv4 is stored IPv4-mapped (::ffff:192.0.2.1). Show
-- either family with one expression:
--   replaceRegexpOne(IPv6NumToString(SrcAddr), '^::ffff:', '')
--
-- The enrichment columns (SrcCountry … SamplingRateFromExporter) hold what
-- the enricher added (pb fields 2001 and up, docs/enricher.md): '' and 0
-- when it found nothing, or when enrichment is off. Names, roles, sites
-- and interface names repeat a few hundred distinct values at most, hence
-- LowCardinality. SamplingRateFromExporter is true when SamplingRate came
-- from the exporters file because the exporter sent 0.
--
-- Topic, Partition and Offset name the Kafka record each flow came from.
-- The ClickHouse path is at-least-once: after a crash between writing a
-- block and committing its offsets, the block is read again. Find such
-- duplicates with the query in the README ("At-least-once").
--
-- InsertTime is when ClickHouse stored the row (the materialized view
-- fills it with now64(3)): InsertTime - TimeReceived is the flow's latency
-- from the collector to ClickHouse (TimeReceived is whole seconds, so the
-- difference reads up to 1 s high; see docs/clickhouse.md).
--
-- Retention: 7 days (the TTL below). To change it on a running server:
--   ALTER TABLE flows_raw MODIFY TTL Date + INTERVAL 14 DAY;
CREATE TABLE IF NOT EXISTS flows_raw_local
(
    Date           Date,
    TimeReceived   DateTime('UTC')       CODEC(DoubleDelta, ZSTD(1)),
    TimeFlowStart  DateTime64(3, 'UTC')  CODEC(Delta, ZSTD(1)),
    TimeFlowEnd    DateTime64(3, 'UTC')  CODEC(Delta, ZSTD(1)),
    Type           LowCardinality(String),
    SequenceNum    UInt32                CODEC(Delta, ZSTD(1)),
    SamplingRate   UInt64                CODEC(T64, ZSTD(1)),
    SamplerAddress IPv6                  CODEC(ZSTD(1)),
    SrcAddr        IPv6                  CODEC(ZSTD(1)),
    DstAddr        IPv6                  CODEC(ZSTD(1)),
    SrcAS          UInt32                CODEC(T64, ZSTD(1)),
    DstAS          UInt32                CODEC(T64, ZSTD(1)),
    EType          UInt16                CODEC(T64, ZSTD(1)),
    Proto          UInt8                 CODEC(T64, ZSTD(1)),
    SrcPort        UInt16                CODEC(T64, ZSTD(1)),
    DstPort        UInt16                CODEC(T64, ZSTD(1)),
    InIf           UInt32                CODEC(T64, ZSTD(1)),
    OutIf          UInt32                CODEC(T64, ZSTD(1)),
    TCPFlags       UInt16                CODEC(T64, ZSTD(1)),
    Bytes          UInt64                CODEC(T64, ZSTD(1)),
    Packets        UInt64                CODEC(T64, ZSTD(1)),
    Topic          LowCardinality(String),
    Partition      UInt64                CODEC(T64, ZSTD(1)),
    Offset         UInt64                CODEC(T64, ZSTD(1)),
    SrcCountry       LowCardinality(String),
    DstCountry       LowCardinality(String),
    SrcASName        LowCardinality(String),
    DstASName        LowCardinality(String),
    SrcNetName       LowCardinality(String),
    DstNetName       LowCardinality(String),
    SrcNetRole       LowCardinality(String),
    DstNetRole       LowCardinality(String),
    SrcNetSite       LowCardinality(String),
    DstNetSite       LowCardinality(String),
    ExporterName     LowCardinality(String),
    InIfName         LowCardinality(String),
    OutIfName        LowCardinality(String),
    InIfDescription  LowCardinality(String),
    OutIfDescription LowCardinality(String),
    InIfSpeed        UInt64                CODEC(T64, ZSTD(1)),
    OutIfSpeed       UInt64                CODEC(T64, ZSTD(1)),
    InIfBoundary     Enum8('undefined' = 0, 'external' = 1, 'internal' = 2),
    OutIfBoundary    Enum8('undefined' = 0, 'external' = 1, 'internal' = 2),
    SamplingRateFromExporter Bool,
    InsertTime     DateTime64(3, 'UTC')  CODEC(Delta, ZSTD(1))
)
ENGINE = ReplicatedMergeTree('/clickhouse/tables/{shard}/{database}/{table}', '{replica}')
PARTITION BY Date
-- Flow queries select a time range first.
ORDER BY (TimeReceived, SamplerAddress)
TTL Date + INTERVAL 7 DAY
-- Expired days go as whole partitions, without rewriting parts.
SETTINGS ttl_only_drop_parts = 1;

-- Cluster: flows_raw reads flows_raw_local of every shard of flows_cluster
-- (one replica each) and adds nothing itself. The pipeline never inserts
-- here: each node's Kafka table and views write that node's flows_raw_local.
-- The sharding key rand() is for INSERTs into flows_raw by hand (a
-- backfill): each such row goes to one shard, picked at random.
CREATE TABLE IF NOT EXISTS flows_raw AS flows_raw_local
ENGINE = Distributed(flows_cluster, currentDatabase(), flows_raw_local, rand());

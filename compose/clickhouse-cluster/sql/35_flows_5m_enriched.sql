-- GENERATED from compose/clickhouse/35_flows_5m_enriched.sql by
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

-- flows_5m_enriched: traffic per 5 minutes by the enrichment dimensions the
-- traffic dashboard groups by: countries, AS numbers and names, customer
-- networks and sites, exporter and interface names, boundaries.
--
-- A separate table, so that flows_5m stays one row per AS pair. Its key
-- is wider, but every dimension comes from a small configured or
-- published set: countries (~250), AS names (one per AS), network names
-- and sites (the networks file), exporter and interface names (the
-- exporters file). A row exists only for a combination that occurs, so a
-- 5-minute slot holds at most as many rows as there are distinct
-- (remote AS, customer network, interface pair) paths in it, far fewer
-- than flows (docs/clickhouse.md, "Enriched rollup").
--
-- Bytes and Packets are SCALED like flows_5m's; Count is the number of
-- flow records. SummingMergeTree: query with sum(...) GROUP BY, or FINAL.
--
-- Retention: 30 days, as flows_5m. Change it with:
--   ALTER TABLE flows_5m_enriched MODIFY TTL Date + INTERVAL 60 DAY;
CREATE TABLE IF NOT EXISTS flows_5m_enriched_local
(
    Date          Date,
    Timeslot      DateTime('UTC') CODEC(DoubleDelta, ZSTD(1)),
    SrcCountry    LowCardinality(String),
    DstCountry    LowCardinality(String),
    SrcAS         UInt32          CODEC(T64, ZSTD(1)),
    DstAS         UInt32          CODEC(T64, ZSTD(1)),
    SrcASName     LowCardinality(String),
    DstASName     LowCardinality(String),
    SrcNetName    LowCardinality(String),
    DstNetName    LowCardinality(String),
    SrcNetSite    LowCardinality(String),
    DstNetSite    LowCardinality(String),
    ExporterName  LowCardinality(String),
    InIfName      LowCardinality(String),
    OutIfName     LowCardinality(String),
    InIfBoundary  Enum8('undefined' = 0, 'external' = 1, 'internal' = 2),
    OutIfBoundary Enum8('undefined' = 0, 'external' = 1, 'internal' = 2),
    Bytes         UInt128         CODEC(ZSTD(1)),
    Packets       UInt128         CODEC(ZSTD(1)),
    Count         UInt64          CODEC(T64, ZSTD(1))
)
ENGINE = ReplicatedSummingMergeTree('/clickhouse/tables/{shard}/{database}/{table}', '{replica}', (Bytes, Packets, Count))
PARTITION BY Date
ORDER BY (Date, Timeslot, SrcCountry, DstCountry, SrcAS, DstAS, SrcASName, DstASName,
          SrcNetName, DstNetName, SrcNetSite, DstNetSite, ExporterName, InIfName, OutIfName,
          InIfBoundary, OutIfBoundary)
TTL Date + INTERVAL 30 DAY
SETTINGS ttl_only_drop_parts = 1;

-- Cluster: flows_5m_enriched reads flows_5m_enriched_local of every shard of flows_cluster
-- (one replica each) and adds nothing itself. The pipeline never inserts
-- here: each node's Kafka table and views write that node's flows_5m_enriched_local.
-- The sharding key rand() is for INSERTs into flows_5m_enriched by hand (a
-- backfill): each such row goes to one shard, picked at random.
CREATE TABLE IF NOT EXISTS flows_5m_enriched AS flows_5m_enriched_local
ENGINE = Distributed(flows_cluster, currentDatabase(), flows_5m_enriched_local, rand());

-- Fed by every block inserted into flows_raw. The inner query names the
-- scaled counts so that the outer aliases Bytes and Packets cannot shadow
-- the columns they are computed from.
CREATE MATERIALIZED VIEW IF NOT EXISTS flows_5m_enriched_mv TO flows_5m_enriched_local AS
SELECT
    Date, Timeslot, SrcCountry, DstCountry, SrcAS, DstAS, SrcASName, DstASName,
    SrcNetName, DstNetName, SrcNetSite, DstNetSite, ExporterName, InIfName, OutIfName,
    InIfBoundary, OutIfBoundary,
    sum(ScaledBytes) AS Bytes,
    sum(ScaledPackets) AS Packets,
    count() AS Count
FROM
(
    SELECT
        Date,
        toStartOfFiveMinutes(TimeReceived) AS Timeslot,
        SrcCountry, DstCountry, SrcAS, DstAS, SrcASName, DstASName,
        SrcNetName, DstNetName, SrcNetSite, DstNetSite, ExporterName, InIfName, OutIfName,
        InIfBoundary, OutIfBoundary,
        toUInt128(Bytes) * greatest(SamplingRate, 1) AS ScaledBytes,
        toUInt128(Packets) * greatest(SamplingRate, 1) AS ScaledPackets
    FROM flows_raw_local
)
GROUP BY Date, Timeslot, SrcCountry, DstCountry, SrcAS, DstAS, SrcASName, DstASName,
    SrcNetName, DstNetName, SrcNetSite, DstNetSite, ExporterName, InIfName, OutIfName,
    InIfBoundary, OutIfBoundary;

-- GENERATED from compose/clickhouse/20_flows_5m.sql by
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

-- flows_5m: traffic per 5 minutes and AS pair, with a breakdown per
-- EtherType in ETypeMap.
--
-- Bytes and Packets here are SCALED: the sampled counts multiplied by
-- greatest(SamplingRate, 1). Count is the number of flow records.
-- Bytes and Packets are UInt128: a sum of scaled counts (each at most
-- 2^50, see 60_flows_views.sql) cannot overflow it.
--
-- SummingMergeTree adds up rows with the same (Date, Timeslot, SrcAS, DstAS)
-- when parts merge, and sums ETypeMap per EType (a Nested column whose
-- name ends in "Map"). Until a merge happens a key can have several rows:
-- always query with sum(...) GROUP BY, or FINAL.
--
-- Retention: 30 days. Change it with:
--   ALTER TABLE flows_5m MODIFY TTL Date + INTERVAL 60 DAY;
CREATE TABLE IF NOT EXISTS flows_5m_local
(
    Date     Date,
    Timeslot DateTime('UTC') CODEC(DoubleDelta, ZSTD(1)),
    SrcAS    UInt32          CODEC(T64, ZSTD(1)),
    DstAS    UInt32          CODEC(T64, ZSTD(1)),
    ETypeMap Nested(
        EType   UInt16,
        Bytes   UInt128,
        Packets UInt128,
        Count   UInt64
    ),
    Bytes    UInt128         CODEC(ZSTD(1)),
    Packets  UInt128         CODEC(ZSTD(1)),
    Count    UInt64          CODEC(T64, ZSTD(1))
)
ENGINE = ReplicatedSummingMergeTree('/clickhouse/tables/{shard}/{database}/{table}', '{replica}')
PARTITION BY Date
ORDER BY (Date, Timeslot, SrcAS, DstAS)
TTL Date + INTERVAL 30 DAY
SETTINGS ttl_only_drop_parts = 1;

-- Cluster: flows_5m reads flows_5m_local of every shard of flows_cluster
-- (one replica each) and adds nothing itself. The pipeline never inserts
-- here: each node's Kafka table and views write that node's flows_5m_local.
-- The sharding key rand() is for INSERTs into flows_5m by hand (a
-- backfill): each such row goes to one shard, picked at random.
CREATE TABLE IF NOT EXISTS flows_5m AS flows_5m_local
ENGINE = Distributed(flows_cluster, currentDatabase(), flows_5m_local, rand());

-- Fed by every block inserted into flows_raw. The inner query names the
-- scaled counts so that the outer aliases Bytes and Packets cannot shadow
-- the columns they are computed from.
CREATE MATERIALIZED VIEW IF NOT EXISTS flows_5m_mv TO flows_5m_local AS
WITH sumMap([EType], [ScaledBytes], [ScaledPackets], [toUInt64(1)]) AS ETypeSums
SELECT
    Date,
    Timeslot,
    SrcAS,
    DstAS,
    ETypeSums.1 AS `ETypeMap.EType`,
    ETypeSums.2 AS `ETypeMap.Bytes`,
    ETypeSums.3 AS `ETypeMap.Packets`,
    ETypeSums.4 AS `ETypeMap.Count`,
    sum(ScaledBytes) AS Bytes,
    sum(ScaledPackets) AS Packets,
    count() AS Count
FROM
(
    SELECT
        Date,
        toStartOfFiveMinutes(TimeReceived) AS Timeslot,
        SrcAS,
        DstAS,
        EType,
        toUInt128(Bytes) * greatest(SamplingRate, 1) AS ScaledBytes,
        toUInt128(Packets) * greatest(SamplingRate, 1) AS ScaledPackets
    FROM flows_raw_local
)
GROUP BY Date, Timeslot, SrcAS, DstAS;

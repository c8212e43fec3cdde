-- GENERATED from compose/clickhouse/40_flows_errors.sql by
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

-- flows_errors: Kafka records the Kafka engine could not decode (not a
-- FlowMessage, truncated, an enum value this schema does not know). With
-- kafka_handle_error_mode = 'stream' they arrive here instead of stopping
-- the consumer; RawMessage keeps the record for inspection.
--
-- Retention: 7 days. Change it with:
--   ALTER TABLE flows_errors MODIFY TTL TimeReceived + INTERVAL 30 DAY;
CREATE TABLE IF NOT EXISTS flows_errors_local
(
    TimeReceived DateTime('UTC')        CODEC(DoubleDelta, ZSTD(1)),
    Topic        LowCardinality(String),
    Partition    UInt64,
    Offset       UInt64,
    Error        String                 CODEC(ZSTD(1)),
    RawMessage   String                 CODEC(ZSTD(1))
)
ENGINE = ReplicatedMergeTree('/clickhouse/tables/{shard}/{database}/{table}', '{replica}')
PARTITION BY toDate(TimeReceived)
ORDER BY TimeReceived
TTL TimeReceived + INTERVAL 7 DAY
SETTINGS ttl_only_drop_parts = 1;

-- Cluster: flows_errors reads flows_errors_local of every shard of flows_cluster
-- (one replica each) and adds nothing itself. The pipeline never inserts
-- here: each node's Kafka table and views write that node's flows_errors_local.
-- The sharding key rand() is for INSERTs into flows_errors by hand (a
-- backfill): each such row goes to one shard, picked at random.
CREATE TABLE IF NOT EXISTS flows_errors AS flows_errors_local
ENGINE = Distributed(flows_cluster, currentDatabase(), flows_errors_local, rand());

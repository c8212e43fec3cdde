-- GENERATED from compose/clickhouse/50_flows_kafka.sql by
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

-- flows: the Kafka topic "flows-enriched" as a table. It stores nothing:
-- each block it consumes goes to the materialized views of
-- 60_flows_views.sql.
--
-- Records are the enricher's output: varint-length-delimited FlowMessages
-- (goflow2 -format=bin plus the enrichment fields 2001 and up), decoded
-- with pb/flow.proto, mounted as format_schemas/flow.proto. With
-- ENRICHMENT=off the enricher passes flows through unchanged and the
-- enrichment columns read as '' and 0.
-- Columns are matched to proto fields BY NAME, so each column is named
-- exactly as its field (compose/clickhouse tests check names and types
-- against pb/flow.proto). Fields not listed here are skipped.
--
-- kafka_num_consumers: one consumer thread; raise it up to the number of
-- partitions (and of cores) for more throughput.
-- Cluster: every node runs this table, in the one consumer group
-- kafka_group_name. Kafka gives each partition to one member of a group at
-- a time, so each record is read by one node, and that node's views write
-- its flows to its own *_local tables: a flow lands on exactly one shard,
-- the shard of the node that read it (after a crash, at-least-once still
-- holds: a block may be read again, by the same or another node). The
-- other replica of that shard gets the rows by replication, not from
-- Kafka. Writing through the Distributed tables instead would add a hop
-- and a queue on the reading node's disk, between the Kafka commit and the
-- shard. Partitions spread over the nodes evenly only when their number is
-- a multiple of the nodes' (12 for 4 nodes).
CREATE TABLE IF NOT EXISTS flows
(
    type               Enum8('FLOWUNKNOWN' = 0, 'SFLOW_5' = 1, 'NETFLOW_V5' = 2, 'NETFLOW_V9' = 3, 'IPFIX' = 4),
    time_received_ns   UInt64,
    sequence_num       UInt32,
    sampling_rate      UInt64,
    sampler_address    String,
    time_flow_start_ns UInt64,
    time_flow_end_ns   UInt64,
    bytes              UInt64,
    packets            UInt64,
    src_addr           String,
    dst_addr           String,
    etype              UInt32,
    proto              UInt32,
    src_port           UInt32,
    dst_port           UInt32,
    in_if              UInt32,
    out_if             UInt32,
    tcp_flags          UInt32,
    src_as             UInt32,
    dst_as             UInt32,
    -- Enrichment (pb fields 2001-2020). The Enum8 names are the proto's.
    src_country        String,
    dst_country        String,
    src_as_name        String,
    dst_as_name        String,
    src_net_name       String,
    dst_net_name       String,
    src_net_role       String,
    dst_net_role       String,
    src_net_site       String,
    dst_net_site       String,
    exporter_name      String,
    in_if_name         String,
    out_if_name        String,
    in_if_description  String,
    out_if_description String,
    in_if_speed        UInt64,
    out_if_speed       UInt64,
    in_if_boundary     Enum8('BOUNDARY_UNDEFINED' = 0, 'BOUNDARY_EXTERNAL' = 1, 'BOUNDARY_INTERNAL' = 2),
    out_if_boundary    Enum8('BOUNDARY_UNDEFINED' = 0, 'BOUNDARY_EXTERNAL' = 1, 'BOUNDARY_INTERNAL' = 2),
    sampling_rate_from_exporter Bool
)
ENGINE = Kafka
SETTINGS
    kafka_broker_list = 'kafka1:9092,kafka2:9092,kafka3:9092',
    kafka_topic_list = 'flows-enriched',
    kafka_group_name = 'clickhouse',
    kafka_format = 'Protobuf',
    kafka_schema = 'flow.proto:FlowMessage',
    kafka_num_consumers = 1,
    -- A block is written when it holds this many rows or every 5 s.
    kafka_max_block_size = 65536,
    kafka_flush_interval_ms = 5000,
    -- Undecodable records go to _error/_raw_message (flows_errors) instead
    -- of blocking the partition.
    kafka_handle_error_mode = 'stream';

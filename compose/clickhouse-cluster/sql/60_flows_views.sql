-- GENERATED from compose/clickhouse/60_flows_views.sql by
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

-- Materialized views from the Kafka table. The Kafka engine starts
-- consuming once a view is attached, so these come last, after every table
-- they write to and the rollup views on flows_raw.
--
-- Path of a decoded flow: flows (Kafka) -> flows_checked_mv -> flows_checked
-- (Null engine: stores nothing) -> flows_raw_mv when FlowError is empty,
-- flows_rejected_mv to flows_errors otherwise. The bounds are the ones the
-- PostgreSQL inserter applies (pgsink.ValidateFlow), so both stores accept
-- the same flows and no conversion below can wrap:
--   time_received_ns  set, from 2000-01-01, at most 10 minutes ahead of now
--   time_flow_*_ns    at most 2^63-1
--   sampling_rate     at most 2^32-1
--   bytes, packets    at most 2^48 each, and at most 2^50 once multiplied
--                     by greatest(sampling_rate, 1)
--   proto             at most 255; etype, ports, tcp_flags at most 65535
--   addresses         0, 4 or 16 bytes
-- Old flows are not refused here: each table drops what is past its own TTL
-- (7 days raw, 30 days flows_5m, 365 days flows_1h).
-- Error starts with the reason label the inserter uses in
-- flowpipeline_inserter_records_invalid_total (too_old, too_new,
-- out_of_range, invalid_field).

CREATE TABLE IF NOT EXISTS flows_checked
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
    sampling_rate_from_exporter Bool,
    Topic              LowCardinality(String),
    Partition          UInt64,
    Offset             UInt64,
    FlowError          String
)
ENGINE = Null;

-- Addresses arrive as 4 bytes (IPv4) or 16 bytes (IPv6). IPv4 is prefixed
-- with ::ffff: to its IPv4-mapped form; a 16-byte FixedString casts to IPv6
-- as raw bytes. substring() keeps toFixedString from throwing even if a
-- malformed length got through, which would stop the consumer.
CREATE MATERIALIZED VIEW IF NOT EXISTS flows_raw_mv TO flows_raw_local AS
SELECT
    toDate(TimeReceived) AS Date,
    toDateTime(intDiv(time_received_ns, 1000000000), 'UTC') AS TimeReceived,
    fromUnixTimestamp64Milli(toInt64(intDiv(time_flow_start_ns, 1000000)), 'UTC') AS TimeFlowStart,
    fromUnixTimestamp64Milli(toInt64(intDiv(time_flow_end_ns, 1000000)), 'UTC') AS TimeFlowEnd,
    toString(type) AS Type,
    sequence_num AS SequenceNum,
    sampling_rate AS SamplingRate,
    CAST(toFixedString(substring(if(length(sampler_address) = 4, concat(unhex('00000000000000000000FFFF'), sampler_address), sampler_address), 1, 16), 16) AS IPv6) AS SamplerAddress,
    CAST(toFixedString(substring(if(length(src_addr) = 4, concat(unhex('00000000000000000000FFFF'), src_addr), src_addr), 1, 16), 16) AS IPv6) AS SrcAddr,
    CAST(toFixedString(substring(if(length(dst_addr) = 4, concat(unhex('00000000000000000000FFFF'), dst_addr), dst_addr), 1, 16), 16) AS IPv6) AS DstAddr,
    src_as AS SrcAS,
    dst_as AS DstAS,
    toUInt16(etype) AS EType,
    toUInt8(proto) AS Proto,
    toUInt16(src_port) AS SrcPort,
    toUInt16(dst_port) AS DstPort,
    in_if AS InIf,
    out_if AS OutIf,
    toUInt16(tcp_flags) AS TCPFlags,
    bytes AS Bytes,
    packets AS Packets,
    Topic,
    Partition,
    Offset,
    src_country AS SrcCountry,
    dst_country AS DstCountry,
    src_as_name AS SrcASName,
    dst_as_name AS DstASName,
    src_net_name AS SrcNetName,
    dst_net_name AS DstNetName,
    src_net_role AS SrcNetRole,
    dst_net_role AS DstNetRole,
    src_net_site AS SrcNetSite,
    dst_net_site AS DstNetSite,
    exporter_name AS ExporterName,
    in_if_name AS InIfName,
    out_if_name AS OutIfName,
    in_if_description AS InIfDescription,
    out_if_description AS OutIfDescription,
    in_if_speed AS InIfSpeed,
    out_if_speed AS OutIfSpeed,
    -- Same numbers, flows_raw's lower-case names.
    CAST(toInt8(in_if_boundary) AS Enum8('undefined' = 0, 'external' = 1, 'internal' = 2)) AS InIfBoundary,
    CAST(toInt8(out_if_boundary) AS Enum8('undefined' = 0, 'external' = 1, 'internal' = 2)) AS OutIfBoundary,
    sampling_rate_from_exporter AS SamplingRateFromExporter,
    -- When the row is stored: InsertTime - TimeReceived is the latency.
    now64(3, 'UTC') AS InsertTime
FROM flows_checked
WHERE FlowError = '';

-- Flows outside the bounds: the reason, and the decoded fields as JSON so
-- the record can be read without Kafka.
CREATE MATERIALIZED VIEW IF NOT EXISTS flows_rejected_mv TO flows_errors_local AS
SELECT
    now('UTC') AS TimeReceived,
    Topic,
    Partition,
    Offset,
    FlowError AS Error,
    formatRowNoNewline('JSONEachRow', type, time_received_ns, sequence_num, sampling_rate,
        hex(sampler_address) AS sampler_address, time_flow_start_ns, time_flow_end_ns, bytes, packets,
        hex(src_addr) AS src_addr, hex(dst_addr) AS dst_addr, etype, proto, src_port, dst_port,
        in_if, out_if, tcp_flags, src_as, dst_as,
        src_country, dst_country, src_as_name, dst_as_name, src_net_name, dst_net_name,
        src_net_role, dst_net_role, src_net_site, dst_net_site, exporter_name,
        in_if_name, out_if_name, in_if_description, out_if_description,
        in_if_speed, out_if_speed, in_if_boundary, out_if_boundary, sampling_rate_from_exporter) AS RawMessage
FROM flows_checked
WHERE FlowError != '';

CREATE MATERIALIZED VIEW IF NOT EXISTS flows_errors_mv TO flows_errors_local AS
SELECT
    now('UTC')   AS TimeReceived,
    _topic       AS Topic,
    _partition   AS Partition,
    _offset      AS Offset,
    _error       AS Error,
    _raw_message AS RawMessage
FROM flows
WHERE length(_error) > 0;

-- Checks each decoded flow; the first bound it breaks names the error.
-- Products are computed in UInt128 so that the check itself cannot wrap.
CREATE MATERIALIZED VIEW IF NOT EXISTS flows_checked_mv TO flows_checked AS
SELECT
    type, time_received_ns, sequence_num, sampling_rate, sampler_address,
    time_flow_start_ns, time_flow_end_ns, bytes, packets, src_addr, dst_addr,
    etype, proto, src_port, dst_port, in_if, out_if, tcp_flags, src_as, dst_as,
    src_country, dst_country, src_as_name, dst_as_name, src_net_name, dst_net_name,
    src_net_role, dst_net_role, src_net_site, dst_net_site, exporter_name,
    in_if_name, out_if_name, in_if_description, out_if_description,
    in_if_speed, out_if_speed, in_if_boundary, out_if_boundary, sampling_rate_from_exporter,
    _topic AS Topic,
    _partition AS Partition,
    _offset AS Offset,
    multiIf(
        time_received_ns = 0,
            'invalid_field: time_received_ns is not set',
        time_received_ns < 946684800000000000,
            concat('too_old: time_received_ns ', toString(time_received_ns), ' is before 2000-01-01'),
        intDiv(time_received_ns, 1000000000) > toUnixTimestamp(now()) + 600,
            concat('too_new: time_received_ns ', toString(time_received_ns), ' is more than 10 minutes ahead of now'),
        time_flow_start_ns > 9223372036854775807,
            concat('out_of_range: time_flow_start_ns ', toString(time_flow_start_ns), ' exceeds 9223372036854775807'),
        time_flow_end_ns > 9223372036854775807,
            concat('out_of_range: time_flow_end_ns ', toString(time_flow_end_ns), ' exceeds 9223372036854775807'),
        sampling_rate > 4294967295,
            concat('out_of_range: sampling_rate ', toString(sampling_rate), ' exceeds 4294967295'),
        bytes > 281474976710656,
            concat('out_of_range: bytes ', toString(bytes), ' exceeds 281474976710656'),
        packets > 281474976710656,
            concat('out_of_range: packets ', toString(packets), ' exceeds 281474976710656'),
        toUInt128(bytes) * greatest(sampling_rate, 1) > 1125899906842624,
            concat('out_of_range: bytes * sampling_rate ', toString(toUInt128(bytes) * greatest(sampling_rate, 1)), ' exceeds 1125899906842624'),
        toUInt128(packets) * greatest(sampling_rate, 1) > 1125899906842624,
            concat('out_of_range: packets * sampling_rate ', toString(toUInt128(packets) * greatest(sampling_rate, 1)), ' exceeds 1125899906842624'),
        proto > 255,
            concat('out_of_range: proto ', toString(proto), ' exceeds 255'),
        etype > 65535,
            concat('out_of_range: etype ', toString(etype), ' exceeds 65535'),
        src_port > 65535,
            concat('out_of_range: src_port ', toString(src_port), ' exceeds 65535'),
        dst_port > 65535,
            concat('out_of_range: dst_port ', toString(dst_port), ' exceeds 65535'),
        tcp_flags > 65535,
            concat('out_of_range: tcp_flags ', toString(tcp_flags), ' exceeds 65535'),
        length(sampler_address) NOT IN (0, 4, 16),
            concat('invalid_field: sampler_address has ', toString(length(sampler_address)), ' bytes, want 0, 4 or 16'),
        length(src_addr) NOT IN (0, 4, 16),
            concat('invalid_field: src_addr has ', toString(length(src_addr)), ' bytes, want 0, 4 or 16'),
        length(dst_addr) NOT IN (0, 4, 16),
            concat('invalid_field: dst_addr has ', toString(length(dst_addr)), ' bytes, want 0, 4 or 16'),
        '') AS FlowError
FROM flows
WHERE length(_error) = 0;

-- Materialized views from the Kafka table. The Kafka engine starts
-- consuming once a view is attached, so these come last, after every table
-- they write to and the rollup views on flows_raw.

CREATE MATERIALIZED VIEW IF NOT EXISTS flows_errors_mv TO flows_errors AS
SELECT
    now('UTC')   AS TimeReceived,
    _topic       AS Topic,
    _partition   AS Partition,
    _offset      AS Offset,
    _error       AS Error,
    _raw_message AS RawMessage
FROM flows
WHERE length(_error) > 0;

-- Addresses arrive as 4 bytes (IPv4) or 16 bytes (IPv6). IPv4 is prefixed
-- with ::ffff: to its IPv4-mapped form; a 16-byte FixedString casts to IPv6
-- as raw bytes. substring() keeps toFixedString from throwing on a
-- malformed length, which would stop the consumer.
CREATE MATERIALIZED VIEW IF NOT EXISTS flows_raw_mv TO flows_raw AS
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
    packets AS Packets
FROM flows
WHERE length(_error) = 0;

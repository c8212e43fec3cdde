-- The schema that the inserter of commit ad3f7dd (the release before the enrichment columns) created,
-- reproduced from its ddl(): one statement per chunk, chunks separated by lines holding only "--;".
--;
CREATE TABLE IF NOT EXISTS flows (
  time_received timestamptz NOT NULL,
  time_flow_start timestamptz,
  time_flow_end timestamptz,
  type smallint,
  sequence_num bigint,
  sampling_rate bigint,
  sampler_address inet,
  src_addr inet,
  dst_addr inet,
  src_as bigint,
  dst_as bigint,
  etype integer,
  proto smallint,
  src_port integer,
  dst_port integer,
  tcp_flags integer,
  in_if bigint,
  out_if bigint,
  bytes bigint,
  packets bigint
) PARTITION BY RANGE (time_received)
--;
CREATE INDEX IF NOT EXISTS flows_time_received_brin ON flows USING brin (time_received)
--;
CREATE TABLE IF NOT EXISTS flows_5m (
  timeslot timestamptz NOT NULL,
  src_as bigint NOT NULL,
  dst_as bigint NOT NULL,
  etype integer NOT NULL,
  bytes numeric NOT NULL,
  packets numeric NOT NULL,
  flows bigint NOT NULL,
  PRIMARY KEY (timeslot, src_as, dst_as, etype)
)
--;
CREATE TABLE IF NOT EXISTS kafka_offsets (
  consumer_group text NOT NULL,
  topic text NOT NULL,
  partition integer NOT NULL,
  next_offset bigint NOT NULL,
  updated_at timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (consumer_group, topic, partition)
)
--;
CREATE OR REPLACE VIEW flows_scaled AS
SELECT *, bytes * greatest(sampling_rate, 1) AS bytes_scaled,
       packets * greatest(sampling_rate, 1) AS packets_scaled
FROM flows
--;
COMMENT ON COLUMN flows.bytes IS 'sampled bytes as sent by the exporter; multiply by greatest(sampling_rate, 1), see view flows_scaled'
--;
COMMENT ON COLUMN flows_5m.bytes IS 'sum of scaled bytes: bytes * greatest(sampling_rate, 1), as bytes_scaled in flows_scaled'
--;
COMMENT ON COLUMN flows_5m.packets IS 'sum of scaled packets: packets * greatest(sampling_rate, 1), as packets_scaled in flows_scaled'
--;
COMMENT ON COLUMN flows_5m.flows IS 'number of flow rows'
--;
COMMENT ON TABLE flows_5m IS '5-minute rollup of flows per (src_as, dst_as, etype): scaled bytes and packets (x greatest(sampling_rate, 1)) and the flow count'


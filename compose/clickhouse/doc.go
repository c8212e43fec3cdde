// Package clickhouse holds the ClickHouse schema of flow-pipeline: the
// *.sql files of this directory, applied in lexical order by the
// clickhouse-server image from /docker-entrypoint-initdb.d. It has no Go
// code; its tests run those files on chDB, the real ClickHouse engine
// in-process, with the Kafka-engine table swapped for an insertable one.
package clickhouse

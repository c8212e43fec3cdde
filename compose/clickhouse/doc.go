// Package clickhouse holds the ClickHouse schema of flow-pipeline: the
// *.sql files of this directory, applied in lexical order by the
// clickhouse-server image from /docker-entrypoint-initdb.d. Its one piece
// of Go, Cluster, derives the cluster schema (compose/clickhouse-cluster)
// from those files. Its tests run both on chDB, the real ClickHouse engine
// in-process, with the Kafka-engine table swapped for an insertable one.
package clickhouse

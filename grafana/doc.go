// Package grafana holds Grafana's provisioning (datasources by uid, the
// dashboard provider) and the dashboards of the demo stacks, as files that
// compose mounts into the Grafana container.
//
// Its tests check every dashboard against Grafana's dashboard model, expand
// Grafana's PostgreSQL macros and the ClickHouse plugin's macros the way they
// do, and run every SQL panel query: the PostgreSQL ones against a real
// PostgreSQL filled with mocker flows through the inserter's sink, the
// ClickHouse ones on chDB with the schema of compose/clickhouse.
package grafana

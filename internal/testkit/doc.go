// Package testkit is the root of everything only tests use: the service
// harnesses (testenv: kfake, Kafka 4, PostgreSQL; chdb: ClickHouse's engine
// in-process), the flow fixtures (flowtest), the goflow2 compatibility kit
// (goflow2test) and the end-to-end test through the real goflow2 (e2e).
//
// Nothing outside internal/testkit ships code that imports it:
// TestProductionImportsNoTestCode checks that with `go list`.
package testkit

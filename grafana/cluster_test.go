package grafana

import (
	"path/filepath"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/encoding/protowire"

	"github.com/spendletonliveaction/flow-pipeline/internal/testkit/chdb"
	"github.com/spendletonliveaction/flow-pipeline/pb"
)

// TestClickHouseQueriesCluster: every SQL panel of the ClickHouse traffic
// dashboard returns the same rows, byte for byte, from the cluster schema
// (compose/clickhouse-cluster: two shards, each flow stored on one, read
// through the Distributed tables' names) as from the single-node schema,
// for the same enriched flows. chdb.ApplyCluster stands in for the
// cluster: each Distributed table is a view over both shards' local
// tables. (TestClickHouseQueries checks the single node's rows are right.)
func TestClickHouseQueriesCluster(t *testing.T) {
	s := chdb.Start(t)
	if s == nil {
		return
	}
	if err := s.Exec("CREATE DATABASE single; USE single"); err != nil {
		t.Fatal(err)
	}
	if err := s.ApplySchema("../compose/clickhouse", true); err != nil {
		t.Fatal(err)
	}
	shards := []string{"shard1", "shard2"}
	if _, err := s.ApplyCluster("../compose/clickhouse-cluster/sql", shards); err != nil {
		t.Fatal(err)
	}
	end := time.Now().UTC().Truncate(5 * time.Minute)
	flows, _ := mockFlows(3000, end)
	data, _ := enrichedRecord(t, flows)
	proto, err := filepath.Abs("../pb/flow.proto")
	if err != nil {
		t.Fatal(err)
	}
	schema := proto + ":FlowMessage"
	if err := s.InsertProtobuf("single.flows", data, schema); err != nil {
		t.Fatal(err)
	}
	// Every other flow to each shard, as records of different partitions
	// read by the nodes of different shards.
	parts := make([][]byte, len(shards))
	i := 0
	if err := pb.ForEachFrame(data, func(msg []byte) error {
		parts[i%len(shards)] = protowire.AppendBytes(parts[i%len(shards)], msg)
		i++
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	for j, shard := range shards {
		if err := s.InsertProtobuf(shard+".flows", parts[j], schema); err != nil {
			t.Fatal(err)
		}
	}
	run := func(db, sql string) string {
		t.Helper()
		if err := s.Exec("USE " + db); err != nil {
			t.Fatal(err)
		}
		out, err := s.Run(sql, "JSONCompactEachRowWithNames")
		if err != nil {
			t.Fatalf("%s: %v\n%s", db, err, sql)
		}
		return out
	}
	if got := run(shards[1], "SELECT count() FROM flows_raw_local"); got != "[\"count()\"]\n[1500]\n" {
		t.Fatalf("shard2 holds %q flows, want 1500", got)
	}
	qc := queryWindow(end)
	qs := sqlQueries(t, "dashboards/traffic-clickhouse.json")
	rows := 0
	for _, q := range qs {
		t.Run(q.panel+"/"+q.refID, func(t *testing.T) {
			sql, err := expandClickHouse(q.sql, qc)
			if err != nil {
				t.Fatalf("expand: %v", err)
			}
			single, cluster := run("single", sql), run(shards[0], sql)
			if single != cluster {
				t.Errorf("the cluster returns\n%s\nthe single node\n%s", cluster, single)
			}
			rows += strings.Count(single, "\n") - 1
		})
	}
	if len(qs) < 15 || rows < 100 {
		t.Errorf("%d panels compared, %d rows: too few for the comparison to mean anything", len(qs), rows)
	}
	t.Logf("%d panels, %d rows, equal on the cluster and the single node", len(qs), rows)
}

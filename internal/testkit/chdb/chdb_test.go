package chdb_test

import (
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/spendletonliveaction/flow-pipeline/internal/testkit/chdb"
)

func TestSplitStatements(t *testing.T) {
	tests := []struct {
		name   string
		script string
		want   []string
	}{
		{"empty", "  \n-- only a comment\n", nil},
		{"two", "SELECT 1;\nSELECT 2;", []string{"SELECT 1", "SELECT 2"}},
		{"no final semicolon", "SELECT 1", []string{"SELECT 1"}},
		{"line comment with semicolon", "SELECT 1 -- a; b\n;", []string{"SELECT 1"}},
		{"block comment", "SELECT /* ; */ 1;", []string{"SELECT   1"}},
		{"string with semicolon", "SELECT 'a;b', 'it''s', 'x\\';y';", []string{"SELECT 'a;b', 'it''s', 'x\\';y'"}},
		{"quoted identifiers", "SELECT 1 AS `a;b`, 2 AS \"c;d\";SELECT 3", []string{"SELECT 1 AS `a;b`, 2 AS \"c;d\"", "SELECT 3"}},
		{"dashes in string", "SELECT '--not a comment';", []string{"SELECT '--not a comment'"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := chdb.SplitStatements(tt.script)
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("SplitStatements(%q) = %q, want %q", tt.script, got, tt.want)
			}
		})
	}
}

func TestSplitStatementsErrors(t *testing.T) {
	for _, script := range []string{"SELECT 'open", "SELECT /* open", "SELECT `open"} {
		if got, err := chdb.SplitStatements(script); err == nil {
			t.Errorf("SplitStatements(%q) = %q, want an error", script, got)
		}
	}
}

func TestSwapKafkaEngine(t *testing.T) {
	stmt := "CREATE TABLE IF NOT EXISTS k (a UInt64, b String)\nENGINE = Kafka\nSETTINGS kafka_broker_list = 'kafka:9092', kafka_format = 'Protobuf'"
	got, swapped := chdb.SwapKafkaEngine(stmt)
	if !swapped {
		t.Fatalf("SwapKafkaEngine did not swap %q", stmt)
	}
	want := "CREATE TABLE IF NOT EXISTS k (a UInt64, b String,\n    " + strings.Join(chdb.KafkaVirtualColumns, ",\n    ") + "\n) ENGINE = Null"
	if got != want {
		t.Errorf("SwapKafkaEngine:\n got %s\nwant %s", got, want)
	}
	other := "CREATE TABLE m (a UInt64) ENGINE = MergeTree ORDER BY a"
	if got, swapped := chdb.SwapKafkaEngine(other); swapped || got != other {
		t.Errorf("SwapKafkaEngine(%q) = %q, %v; want it unchanged", other, got, swapped)
	}
}

func TestSession(t *testing.T) {
	s := chdb.Start(t)
	if err := s.Exec("CREATE TABLE t (k String, v UInt64) ENGINE = MergeTree ORDER BY k"); err != nil {
		t.Fatal(err)
	}
	if err := s.Exec("INSERT INTO t VALUES ('a', 18446744073709551615), ('b;c', 2)"); err != nil {
		t.Fatal(err)
	}
	var rows []struct {
		K string
		V uint64
	}
	if err := s.QueryInto("SELECT k AS K, v AS V FROM t ORDER BY k", &rows); err != nil {
		t.Fatal(err)
	}
	if len(rows) != 2 || rows[0].K != "a" || rows[0].V != 18446744073709551615 || rows[1].K != "b;c" || rows[1].V != 2 {
		t.Errorf("rows = %+v", rows)
	}
	maps, err := s.Query("SELECT count() AS n FROM t")
	if err != nil {
		t.Fatal(err)
	}
	if len(maps) != 1 || maps[0]["n"].(interface{ String() string }).String() != "2" {
		t.Errorf("Query = %v, want n=2", maps)
	}
	if err := s.Exec("SELECT * FROM no_such_table"); err == nil || !strings.Contains(err.Error(), "no_such_table") {
		t.Errorf("query of a missing table: err = %v, want one naming the table", err)
	}
	// The session survives an error.
	if out, err := s.Run("SELECT 41 + 1", "CSV"); err != nil || out != "42\n" {
		t.Errorf("after an error: %q, %v", out, err)
	}
}

func TestApplySchemaSwapsKafka(t *testing.T) {
	dir := t.TempDir()
	write := func(name, body string) {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write("20_views.sql", "CREATE MATERIALIZED VIEW v TO dst AS SELECT a, _error AS e FROM src; -- last\n")
	write("10_tables.sql", "CREATE TABLE dst (a UInt64, e String) ENGINE = MergeTree ORDER BY a;\n"+
		"CREATE TABLE src (a UInt64) ENGINE = Kafka SETTINGS kafka_broker_list = 'kafka:9092', kafka_topic_list = 't', kafka_group_name = 'g', kafka_format = 'JSONEachRow';\n")
	write("README.md", "not SQL")
	s := chdb.Start(t)
	if err := s.ApplySchema(dir, true); err != nil {
		t.Fatal(err)
	}
	if err := s.Exec("INSERT INTO src (a, _error) VALUES (1, ''), (2, 'broken')"); err != nil {
		t.Fatal(err)
	}
	out, err := s.Run("SELECT a, e FROM dst ORDER BY a", "CSV")
	if err != nil {
		t.Fatal(err)
	}
	if want := "1,\"\"\n2,\"broken\"\n"; out != want {
		t.Errorf("dst = %q, want %q", out, want)
	}
	if err := chdb.Start(t).ApplySchema(t.TempDir(), true); err == nil {
		t.Error("ApplySchema of an empty directory succeeded")
	}
}

func TestApplyCluster(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "10_t.sql"), []byte(`
CREATE TABLE IF NOT EXISTS t_local (k UInt8, v UInt64) ENGINE = ReplicatedSummingMergeTree('/clickhouse/tables/{shard}/{database}/{table}', '{replica}', (v)) ORDER BY k;
CREATE TABLE IF NOT EXISTS t AS t_local
ENGINE = Distributed(c, currentDatabase(), t_local, rand());
CREATE TABLE IF NOT EXISTS src (k UInt8) ENGINE = Kafka SETTINGS kafka_broker_list = 'kafka:9092', kafka_topic_list = 't', kafka_group_name = 'g', kafka_format = 'JSONEachRow';
CREATE MATERIALIZED VIEW IF NOT EXISTS t_mv TO t_local AS SELECT k, _partition AS v FROM src;
`), 0o644); err != nil {
		t.Fatal(err)
	}
	s := chdb.Start(t)
	dist, err := s.ApplyCluster(dir, []string{"a", "b"})
	if err != nil {
		t.Fatal(err)
	}
	if want := []chdb.Distributed{{Name: "t", Cluster: "c", Local: "t_local"}}; !reflect.DeepEqual(dist, want) {
		t.Errorf("Distributed tables = %+v, want %+v", dist, want)
	}
	if err := s.Exec("INSERT INTO a.src (k, _partition) VALUES (1, 10), (2, 20); INSERT INTO b.src (k, _partition) VALUES (1, 5)"); err != nil {
		t.Fatal(err)
	}
	// Each database's t reads both shards; the sum merges across them.
	for _, db := range []string{"a", "b"} {
		out, err := s.Run("SELECT k, sum(v) FROM "+db+".t GROUP BY k ORDER BY k", "CSV")
		if err != nil {
			t.Fatal(err)
		}
		if want := "1,15\n2,20\n"; out != want {
			t.Errorf("%s.t = %q, want %q", db, out, want)
		}
	}
	if err := os.WriteFile(filepath.Join(dir, "20_bad.sql"), []byte("CREATE TABLE r (a UInt8) ENGINE = ReplicatedMergeTree ORDER BY a"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := chdb.Start(t).ApplyCluster(dir, []string{"x"}); err == nil || !strings.Contains(err.Error(), "does not know") {
		t.Errorf("ApplyCluster with an engine it cannot swap: %v, want an error", err)
	}
}

package clickhouse_test

import (
	"errors"
	"flag"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/spendletonliveaction/flow-pipeline/compose/clickhouse"
	"github.com/spendletonliveaction/flow-pipeline/internal/testkit/chdb"
	"github.com/spendletonliveaction/flow-pipeline/pb"
)

var update = flag.Bool("update", false, "rewrite compose/clickhouse-cluster from the single-node schema")

func clusterDir(t testing.TB) string {
	return filepath.Join(repoRoot(t), "compose", "clickhouse-cluster")
}

func clusterSQLDir(t testing.TB) string { return filepath.Join(clusterDir(t), "sql") }

// readSchema reads the *.sql files of dir, in the order the server applies them.
func readSchema(t testing.TB, dir string) []clickhouse.File {
	t.Helper()
	paths, err := chdb.SchemaFiles(dir)
	if err != nil {
		t.Fatal(err)
	}
	var files []clickhouse.File
	for _, p := range paths {
		raw, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		files = append(files, clickhouse.File{Name: filepath.Base(p), Text: string(raw)})
	}
	return files
}

// TestClusterSchemaUpToDate: compose/clickhouse-cluster holds exactly what
// the derivation gives from the single-node schema and users file, so a
// change there (a column, a table) cannot be forgotten in the cluster. With
// -update it rewrites them.
func TestClusterSchemaUpToDate(t *testing.T) {
	derived, local, err := clickhouse.Cluster(readSchema(t, schemaDir(t)))
	if err != nil {
		t.Fatalf("the cluster schema cannot be derived from compose/clickhouse: %v", err)
	}
	single, err := os.ReadFile(filepath.Join(repoRoot(t), "compose", "clickhouse-users.xml"))
	if err != nil {
		t.Fatal(err)
	}
	users, err := clickhouse.ClusterUsers(string(single), local)
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]string{filepath.Join(clusterDir(t), "users.xml"): users}
	for _, f := range derived {
		want[filepath.Join(clusterSQLDir(t), f.Name)] = f.Text
	}
	if *update {
		stale, _ := filepath.Glob(filepath.Join(clusterSQLDir(t), "*.sql"))
		for _, p := range stale {
			if _, ok := want[p]; !ok {
				if err := os.Remove(p); err != nil {
					t.Fatal(err)
				}
			}
		}
		if err := os.MkdirAll(clusterSQLDir(t), 0o755); err != nil {
			t.Fatal(err)
		}
		for p, text := range want {
			if err := os.WriteFile(p, []byte(text), 0o644); err != nil {
				t.Fatal(err)
			}
		}
		return
	}
	have, _ := filepath.Glob(filepath.Join(clusterSQLDir(t), "*.sql"))
	for _, p := range have {
		if _, ok := want[p]; !ok {
			t.Errorf("%s has no single-node counterpart; run %s", p, clickhouse.RegenerateCommand)
		}
	}
	for p, text := range want {
		got, err := os.ReadFile(p)
		if err != nil || string(got) != text {
			t.Errorf("%s is not what the single-node schema gives (%v); run %s", p, err, clickhouse.RegenerateCommand)
		}
	}
	// Tables added at merge come after these.
	if want := []string{"flows_raw", "flows_5m", "flows_1h", "flows_5m_enriched", "flows_errors"}; len(local) < len(want) || !slices.Equal(local[:len(want)], want) {
		t.Errorf("local tables = %v, want %v first", local, want)
	}
}

// A small schema in the shape of the real one, for the rules.
const miniSchema = `-- t: rows.
CREATE TABLE IF NOT EXISTS t
(
    a UInt64, -- a comment; with a semicolon
    s String
)
ENGINE = MergeTree
ORDER BY a;

CREATE TABLE IF NOT EXISTS t_sum (a UInt64, b UInt128) ENGINE = SummingMergeTree((b)) ORDER BY a;

CREATE TABLE IF NOT EXISTS k (a UInt64, s String) ENGINE = Kafka
SETTINGS kafka_broker_list = 'kafka:9092', kafka_group_name = 'g';

CREATE TABLE IF NOT EXISTS n (a UInt64) ENGINE = Null;

CREATE MATERIALIZED VIEW IF NOT EXISTS t_mv TO t AS SELECT a, 't' AS s FROM k;
CREATE MATERIALIZED VIEW IF NOT EXISTS t_sum_mv TO t_sum AS SELECT a, toUInt128(a) AS b FROM t
`

func TestClusterRules(t *testing.T) {
	out, local, err := clickhouse.Cluster([]clickhouse.File{{Name: "10_mini.sql", Text: miniSchema}})
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(local, []string{"t", "t_sum"}) {
		t.Errorf("local tables = %v, want [t t_sum]", local)
	}
	got := out[0].Text
	stmts, err := chdb.SplitStatements(got)
	if err != nil {
		t.Fatal(err)
	}
	norm := func(s string) string { return strings.Join(strings.Fields(s), " ") }
	want := []string{
		"CREATE TABLE IF NOT EXISTS t_local ( a UInt64, s String ) ENGINE = ReplicatedMergeTree('/clickhouse/tables/{shard}/{database}/{table}', '{replica}') ORDER BY a",
		"CREATE TABLE IF NOT EXISTS t AS t_local ENGINE = Distributed(flows_cluster, currentDatabase(), t_local, rand())",
		"CREATE TABLE IF NOT EXISTS t_sum_local (a UInt64, b UInt128) ENGINE = ReplicatedSummingMergeTree('/clickhouse/tables/{shard}/{database}/{table}', '{replica}', (b)) ORDER BY a",
		"CREATE TABLE IF NOT EXISTS t_sum AS t_sum_local ENGINE = Distributed(flows_cluster, currentDatabase(), t_sum_local, rand())",
		"CREATE TABLE IF NOT EXISTS k (a UInt64, s String) ENGINE = Kafka SETTINGS kafka_broker_list = 'kafka1:9092,kafka2:9092,kafka3:9092', kafka_group_name = 'g'",
		"CREATE TABLE IF NOT EXISTS n (a UInt64) ENGINE = Null",
		// The string 't' and the view names stay; the tables are the local ones.
		"CREATE MATERIALIZED VIEW IF NOT EXISTS t_mv TO t_local AS SELECT a, 't' AS s FROM k",
		"CREATE MATERIALIZED VIEW IF NOT EXISTS t_sum_mv TO t_sum_local AS SELECT a, toUInt128(a) AS b FROM t_local",
	}
	if len(stmts) != len(want) {
		t.Fatalf("derived %d statements, want %d:\n%s", len(stmts), len(want), got)
	}
	for i := range want {
		if norm(stmts[i]) != want[i] {
			t.Errorf("statement %d\n got %s\nwant %s", i, norm(stmts[i]), want[i])
		}
	}
	for _, w := range []string{"-- GENERATED from compose/clickhouse/10_mini.sql", "-- t: rows.", "-- a comment; with a semicolon", "a flow lands on exactly one shard"} {
		if !strings.Contains(got, w) {
			t.Errorf("derived file lacks %q:\n%s", w, got)
		}
	}

	// What the derivation does not know stops it.
	for name, bad := range map[string]string{
		"other engine":     "CREATE TABLE m (a UInt8) ENGINE = Memory",
		"replicated":       "CREATE TABLE r (a UInt8) ENGINE = ReplicatedMergeTree('/p', '{replica}') ORDER BY a",
		"alter":            "ALTER TABLE t ADD COLUMN b UInt8",
		"view without TO":  "CREATE MATERIALIZED VIEW v ENGINE = MergeTree ORDER BY a AS SELECT 1 AS a",
		"kafka elsewhere":  "CREATE TABLE k2 (a UInt8) ENGINE = Kafka SETTINGS kafka_broker_list = 'broker:9092'",
		"no engine":        "CREATE TABLE x (a UInt8)",
		"insert":           "INSERT INTO t VALUES (1)",
		"unterminated str": "CREATE TABLE x (a UInt8) ENGINE = Null COMMENT 'open",
	} {
		if _, _, err := clickhouse.Cluster([]clickhouse.File{{Name: "bad.sql", Text: bad}}); err == nil {
			t.Errorf("%s: %q was derived; want an error", name, bad)
		} else if name != "unterminated str" && !errors.Is(err, clickhouse.ErrUnknownStatement) {
			t.Errorf("%s: error %v does not wrap ErrUnknownStatement", name, err)
		}
	}
}

// TestClusterCarriesChanges: what the other branches add to the
// single-node schema (a column of flows_raw; a Kafka table, a view and a
// MergeTree table, like the alerts of issue 15) reaches the cluster schema.
func TestClusterCarriesChanges(t *testing.T) {
	files := readSchema(t, schemaDir(t))
	for i, f := range files {
		if f.Name == "10_flows_raw.sql" {
			// A last column, after whatever is last now.
			files[i].Text = strings.Replace(f.Text, "\n)\nENGINE = MergeTree", ",\n    AddedTime DateTime64(3)\n)\nENGINE = MergeTree", 1)
			if files[i].Text == f.Text {
				t.Fatal("10_flows_raw.sql no longer ends its columns with \")\\nENGINE = MergeTree\"; update this test")
			}
		}
	}
	files = append(files, clickhouse.File{Name: "99_test_alerts.sql", Text: `
CREATE TABLE IF NOT EXISTS test_alerts (At DateTime64(3, 'UTC'), Target String, Event LowCardinality(String))
ENGINE = MergeTree ORDER BY (At, Target);
CREATE TABLE IF NOT EXISTS test_alerts_kafka (at String, target String, event String)
ENGINE = Kafka SETTINGS kafka_broker_list = 'kafka:9092', kafka_topic_list = 'test_alerts', kafka_group_name = 'clickhouse-test_alerts', kafka_format = 'JSONEachRow';
CREATE MATERIALIZED VIEW IF NOT EXISTS test_alerts_mv TO test_alerts AS
SELECT parseDateTime64BestEffort(at, 3, 'UTC') AS At, target AS Target, event AS Event FROM test_alerts_kafka;
`})
	out, local, err := clickhouse.Cluster(files)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Contains(local, "test_alerts") {
		t.Errorf("local tables %v lack test_alerts", local)
	}
	all := ""
	for _, f := range out {
		all += f.Text
	}
	for _, w := range []string{
		"AddedTime DateTime64(3)\n)\nENGINE = ReplicatedMergeTree(",
		"CREATE TABLE IF NOT EXISTS test_alerts_local (At",
		"CREATE TABLE IF NOT EXISTS test_alerts AS test_alerts_local\nENGINE = Distributed(flows_cluster, currentDatabase(), test_alerts_local, rand())",
		"test_alerts_kafka (at String, target String, event String)\nENGINE = Kafka SETTINGS kafka_broker_list = 'kafka1:9092,kafka2:9092,kafka3:9092'",
		"test_alerts_mv TO test_alerts_local AS",
		"FROM test_alerts_kafka;",
	} {
		if !strings.Contains(all, w) {
			t.Errorf("derived cluster schema lacks %q", w)
		}
	}
}

// TestClusterSchemaParses: every statement of the cluster files, as
// written (Replicated and Distributed engines, macros), parses on the
// ClickHouse engine, and each table of the single-node schema has its
// counterpart: a Replicated one and a Distributed one per MergeTree table,
// the Kafka and Null tables as they are.
func TestClusterSchemaParses(t *testing.T) {
	s := session(t)
	engineRe := regexp.MustCompile("ENGINE = `?(\\w+)")
	engines := func(dir string) map[string]int {
		n := map[string]int{}
		for _, f := range readSchema(t, dir) {
			stmts, err := chdb.SplitStatements(f.Text)
			if err != nil {
				t.Fatalf("%s: %v", f.Name, err)
			}
			for _, stmt := range stmts {
				out, err := s.Run("SELECT formatQuery("+chdb.Quote(stmt)+")", "TSVRaw")
				if err != nil {
					t.Errorf("%s: does not parse: %v", f.Name, err)
					continue
				}
				if m := engineRe.FindStringSubmatch(out); m != nil {
					n[m[1]]++
				}
			}
		}
		return n
	}
	single, cluster := engines(schemaDir(t)), engines(clusterSQLDir(t))
	want := map[string]int{}
	for e, n := range single {
		if strings.HasSuffix(e, "MergeTree") {
			want["Replicated"+e] += n
			want["Distributed"] += n
		} else {
			want[e] += n
		}
	}
	if single["MergeTree"] < 2 || single["SummingMergeTree"] < 3 || single["Kafka"] < 1 {
		t.Fatalf("the single-node schema's engines %v: fewer tables than this test knows", single)
	}
	if !maps.Equal(cluster, want) {
		t.Errorf("the cluster schema's engines are %v, want %v (from the single node's %v)", cluster, want, single)
	}
}

// The two shards of the test cluster, each a database. Replicas are not
// simulated: both replicas of a shard would hold the same rows (Keeper
// replicates the parts), so one database stands for the shard.
var testShards = []string{"s1", "s2"}

// Partitions of flows-enriched (as in the cluster stack) and their owners:
// node n (of 4; nodes 0 and 1 are shard 1's replicas) reads partitions n,
// n+4 and n+8, as Kafka's round-robin assignor gives 12 partitions to 4
// consumers (the range assignor gives 3 contiguous ones: 3 each either way).
const clusterPartitions = 12

func shardOf(partition int) int { return (partition % 4) / 2 }

// clusterDBs loads the cluster schema into one database per shard
// (chdb.ApplyCluster: the Kafka table swapped as for the single node, the
// replicated engines for their plain counterparts, each Distributed table
// for a view over the local table of every shard). It returns the
// databases.
func clusterDBs(t *testing.T) (*chdb.Session, []string) {
	t.Helper()
	s := session(t)
	prefix := "t_" + strings.ToLower(nonIdent.ReplaceAllString(t.Name(), "_")) + "_"
	var dbs []string
	for _, shard := range testShards {
		db := prefix + shard
		dbs = append(dbs, db)
		if err := s.Exec("DROP DATABASE IF EXISTS " + db); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { s.Exec("DROP DATABASE IF EXISTS " + db) })
	}
	dist, err := s.ApplyCluster(clusterSQLDir(t), dbs)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, d := range dist {
		names = append(names, d.Name)
		if d.Cluster != clickhouse.ClusterName || d.Local != d.Name+clickhouse.LocalSuffix {
			t.Errorf("Distributed table %s reads %s of cluster %s; want %s%s of %s", d.Name, d.Local, d.Cluster, d.Name, clickhouse.LocalSuffix, clickhouse.ClusterName)
		}
	}
	_, local, err := clickhouse.Cluster(readSchema(t, schemaDir(t)))
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(names, local) {
		t.Fatalf("the cluster schema's Distributed tables are %v, want one per local table %v", names, local)
	}
	for _, db := range dbs {
		// Records are staged here, then inserted into the Kafka stand-in
		// with their partition and offset (FORMAT Protobuf cannot set them).
		if err := s.Exec("CREATE TABLE " + db + ".staging AS " + db + ".flows ENGINE = Memory"); err != nil {
			t.Fatal(err)
		}
		for _, name := range names {
			if err := s.Exec("SYSTEM STOP TTL MERGES " + db + "." + name + clickhouse.LocalSuffix); err != nil {
				t.Fatal(err)
			}
		}
	}
	if err := s.Exec("USE " + dbs[0]); err != nil {
		t.Fatal(err)
	}
	return s, dbs
}

// consume feeds msgs (one flow per record, record i in partition i % 12 at
// offset i / 12) to the Kafka table of the node that reads its partition,
// in batches, as the nodes' consumers would.
func consume(t *testing.T, s *chdb.Session, dbs []string, msgs []*pb.FlowMessage, batches int) {
	t.Helper()
	for b := 0; b < batches; b++ {
		lo, hi := b*len(msgs)/batches, (b+1)*len(msgs)/batches
		for p := 0; p < clusterPartitions; p++ {
			first := lo + (p-lo%clusterPartitions+clusterPartitions)%clusterPartitions // first record of p in [lo, hi)
			var buf []byte
			for i := first; i < hi; i += clusterPartitions {
				var err error
				if buf, err = pb.AppendDelimited(buf, msgs[i]); err != nil {
					t.Fatal(err)
				}
			}
			if len(buf) == 0 {
				continue
			}
			db := dbs[shardOf(p)]
			if err := s.InsertProtobuf(db+".staging", buf, protoSchema(t)); err != nil {
				t.Fatal(err)
			}
			if err := s.Exec(fmt.Sprintf("INSERT INTO %[1]s.flows SELECT * REPLACE ('flows-enriched' AS _topic, toUInt64(%[2]d) AS _partition, toUInt64(%[3]d) + rowNumberInAllBlocks() AS _offset) FROM %[1]s.staging SETTINGS max_threads = 1; TRUNCATE TABLE %[1]s.staging",
				db, p, first/clusterPartitions)); err != nil {
				t.Fatal(err)
			}
		}
	}
}

// rollupQuery merges a rollup's rows per key across shards, as a query on
// the Distributed table must (a key can have rows on both shards).
func rollupQuery(table string) string {
	return `SELECT Date, Timeslot, SrcAS, DstAS, m.1 AS ` + "`ETypeMap.EType`" + `, m.2 AS ` + "`ETypeMap.Bytes`" + `,
	m.3 AS ` + "`ETypeMap.Packets`" + `, m.4 AS ` + "`ETypeMap.Count`" + `, B AS Bytes, P AS Packets, C AS Count
FROM (
	SELECT Date, Timeslot, SrcAS, DstAS, sumMap(ETypeMap.EType, ETypeMap.Bytes, ETypeMap.Packets, ETypeMap.Count) AS m,
		sum(Bytes) AS B, sum(Packets) AS P, sum(Count) AS C
	FROM ` + table + `
	GROUP BY Date, Timeslot, SrcAS, DstAS
)
ORDER BY Date, Timeslot, SrcAS, DstAS`
}

const enriched5mQuery = `SELECT Date, Timeslot, SrcCountry, DstCountry, SrcAS, DstAS, SrcASName, DstASName,
	SrcNetName, DstNetName, SrcNetSite, DstNetSite, ExporterName, InIfName, OutIfName,
	InIfBoundary, OutIfBoundary, B AS Bytes, P AS Packets, C AS Count
FROM (
	SELECT Date, Timeslot, SrcCountry, DstCountry, SrcAS, DstAS, SrcASName, DstASName,
		SrcNetName, DstNetName, SrcNetSite, DstNetSite, ExporterName, InIfName, OutIfName,
		InIfBoundary, OutIfBoundary, sum(Bytes) AS B, sum(Packets) AS P, sum(Count) AS C
	FROM flows_5m_enriched
	GROUP BY ALL
)`

// TestClusterFlows runs the data logic of the cluster schema on chDB: the
// enriched mocker flows, spread over 12 partitions read by 4 nodes of 2
// shards, come out of the Distributed tables exactly as the single-node
// tests expect them: every flow once, every rollup sum.
func TestClusterFlows(t *testing.T) {
	s, dbs := clusterDBs(t)
	const n = 12000
	msgs := mockMessages(mockSeed, n, mockStart, mockSpan)
	_, want := enrichedFrames(t, msgs, 0)
	consume(t, s, dbs, want, 3)

	t.Run("one shard per flow", func(t *testing.T) {
		perShard := make([]uint64, len(dbs))
		for i := range want {
			perShard[shardOf(i%clusterPartitions)]++
		}
		for i, db := range dbs {
			var got []struct {
				N          uint64
				Partitions []uint64
				Records    uint64
			}
			if err := s.QueryInto("SELECT count() AS N, arraySort(groupUniqArray(Partition)) AS Partitions, uniqExact(Partition, Offset) AS Records FROM "+db+".flows_raw_local", &got); err != nil {
				t.Fatal(err)
			}
			var wantParts []uint64
			for p := 0; p < clusterPartitions; p++ {
				if shardOf(p) == i {
					wantParts = append(wantParts, uint64(p))
				}
			}
			if len(got) != 1 || got[0].N != perShard[i] || got[0].Records != perShard[i] || !slices.Equal(got[0].Partitions, wantParts) {
				t.Errorf("shard %d holds %+v; want %d flows, each its own record, from partitions %v", i+1, got, perShard[i], wantParts)
			}
		}
		var both []struct{ N uint64 }
		if err := s.QueryInto("SELECT count() AS N FROM "+dbs[0]+".flows_raw_local AS a INNER JOIN "+dbs[1]+".flows_raw_local AS b USING (Topic, Partition, Offset)", &both); err != nil {
			t.Fatal(err)
		}
		if len(both) != 1 || both[0].N != 0 {
			t.Errorf("%+v records are on both shards, want 0", both)
		}
	})

	t.Run("flows_raw", func(t *testing.T) { checkEnrichedRaw(t, s, want) })

	for _, db := range dbs {
		for _, table := range []string{"flows_5m_local", "flows_1h_local", "flows_5m_enriched_local"} {
			if err := s.Exec("OPTIMIZE TABLE " + db + "." + table + " FINAL"); err != nil {
				t.Fatal(err)
			}
		}
	}
	for _, tc := range []struct {
		table string
		slot  time.Duration
	}{{"flows_5m", 5 * time.Minute}, {"flows_1h", time.Hour}} {
		t.Run(tc.table, func(t *testing.T) {
			var got []rollupRow
			if err := s.QueryInto(rollupQuery(tc.table), &got); err != nil {
				t.Fatal(err)
			}
			checkRollupRows(t, tc.table, got, rollup(want, tc.slot))
			// Both shards hold rows of the rollup, and some keys are on
			// both: the merge across shards above is needed.
			var split []struct{ A, B, Both uint64 }
			q := fmt.Sprintf(`SELECT (SELECT count() FROM %[1]s.%[3]s_local) AS A, (SELECT count() FROM %[2]s.%[3]s_local) AS B,
				(SELECT count() FROM %[1]s.%[3]s_local AS x INNER JOIN %[2]s.%[3]s_local AS y USING (Date, Timeslot, SrcAS, DstAS)) AS Both`, dbs[0], dbs[1], tc.table)
			if err := s.QueryInto(q, &split); err != nil {
				t.Fatal(err)
			}
			if len(split) != 1 || split[0].A == 0 || split[0].B == 0 || split[0].Both == 0 {
				t.Errorf("%s rows per shard %+v: want rows on both shards and keys on both", tc.table, split)
			}
		})
	}
	t.Run("flows_5m_enriched", func(t *testing.T) { checkEnriched5m(t, s, want, enriched5mQuery) })

	if c := count(t, s, "flows_errors"); c != 0 {
		t.Errorf("flows_errors has %d rows, want 0", c)
	}
}

// TestClusterColumns: column by column, each table of the single-node
// schema has the same name, type, position, default and codec in the
// cluster as its T_local, and its Distributed stand-in the same names and
// types; the Kafka, Null and view objects are the same set.
func TestClusterColumns(t *testing.T) {
	s, dbs := clusterDBs(t)
	single := schemaDB(t, false)
	if single != s {
		t.Fatal("the single-node and the cluster schema must share the chDB session")
	}
	type col struct {
		Table, Name, Type, DefaultKind, DefaultExpression, CompressionCodec string
		Position                                                            uint64
	}
	const q = `SELECT table AS Table, name AS Name, type AS Type, default_kind AS DefaultKind, default_expression AS DefaultExpression,
		compression_codec AS CompressionCodec, position AS Position FROM system.columns WHERE database = '%s' ORDER BY table, position`
	var singleCols, clusterCols []col
	var singleDB []struct{ DB string }
	if err := s.QueryInto("SELECT currentDatabase() AS DB", &singleDB); err != nil {
		t.Fatal(err)
	}
	if err := s.QueryInto(fmt.Sprintf(q, singleDB[0].DB), &singleCols); err != nil {
		t.Fatal(err)
	}
	if err := s.QueryInto(fmt.Sprintf(q, dbs[0]), &clusterCols); err != nil {
		t.Fatal(err)
	}
	byTable := map[string][]col{}
	for _, c := range clusterCols {
		byTable[c.Table] = append(byTable[c.Table], c)
	}
	tables := map[string][]col{}
	for _, c := range singleCols {
		tables[c.Table] = append(tables[c.Table], c)
	}
	if len(tables) < 8 {
		t.Fatalf("the single-node schema has %d tables with columns, want at least 8", len(tables))
	}
	for table, cols := range tables {
		if strings.HasSuffix(table, "_mv") {
			continue
		}
		check := func(name string, exact bool) {
			got := byTable[name]
			if len(got) != len(cols) {
				t.Errorf("%s has %d columns in the cluster, %s %d", name, len(got), table, len(cols))
				return
			}
			for i, c := range cols {
				g := got[i]
				g.Table = c.Table
				if !exact {
					g.DefaultKind, g.DefaultExpression, g.CompressionCodec = c.DefaultKind, c.DefaultExpression, c.CompressionCodec
				}
				if g != c {
					t.Errorf("cluster %s column %d = %+v, single-node %+v", name, i+1, got[i], c)
				}
			}
		}
		if _, ok := byTable[table+"_local"]; ok {
			check(table+"_local", true)
			check(table, false) // the Distributed table (here a view) reads T_local
		} else {
			check(table, true)
		}
	}
	for table := range byTable {
		if _, ok := tables[strings.TrimSuffix(table, "_local")]; !ok && !strings.HasSuffix(table, "_mv") && table != "staging" {
			t.Errorf("the cluster has %s, which the single-node schema does not", table)
		}
	}
}

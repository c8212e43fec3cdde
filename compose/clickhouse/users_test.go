package clickhouse_test

import (
	"encoding/xml"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/spendletonliveaction/flow-pipeline/internal/testkit/chdb"
)

// usersFile is compose/clickhouse-users.xml, as far as the test reads it.
type usersFile struct {
	DefaultThrow string `xml:"profiles>default>throw_on_max_partitions_per_insert_block"`
	Profile      struct {
		Readonly         string `xml:"readonly"`
		MaxExecutionTime string `xml:"max_execution_time"`
		Constraint       struct {
			Max                 string    `xml:"max"`
			ChangeableInReadony *struct{} `xml:"changeable_in_readonly"`
		} `xml:"constraints>max_execution_time"`
	} `xml:"profiles>grafana_readonly"`
	User struct {
		Password struct {
			FromEnv string `xml:"from_env,attr"`
			Value   string `xml:",chardata"`
		} `xml:"password"`
		Profile          string   `xml:"profile"`
		AccessManagement string   `xml:"access_management"`
		NamedCollections string   `xml:"named_collection_control"`
		Grants           []string `xml:"grants>query"`
	} `xml:"users>grafana"`
}

var grantRe = regexp.MustCompile(`^GRANT SELECT ON default\.(\w+)$`)

// TestGrafanaUser checks Grafana's ClickHouse user. chDB runs every query
// as its built-in "default" user and ignores users from a config file (it
// cannot CREATE USER either: no writable access storage), so the user
// itself cannot log in here. What is executed on chDB: the profile's
// readonly value, read from the file, applied to queries on the real
// schema — SELECT works, writes, DDL and the table functions url(), file(),
// s3(), remote(), executable(), mysql(), postgresql() are refused — and each
// grant parses. The rest (user, profile, access_management, grants naming
// only tables of the schema) is checked structurally.
func TestGrafanaUser(t *testing.T) {
	raw, err := os.ReadFile(filepath.Join(repoRoot(t), "compose", "clickhouse-users.xml"))
	if err != nil {
		t.Fatal(err)
	}
	var f usersFile
	if err := xml.Unmarshal(raw, &f); err != nil {
		t.Fatalf("clickhouse-users.xml: %v", err)
	}
	u, p := f.User, f.Profile
	if u.Profile != "grafana_readonly" || p.Readonly != "1" {
		t.Errorf("user grafana: profile %q with readonly %q, want grafana_readonly with readonly 1", u.Profile, p.Readonly)
	}
	if u.AccessManagement != "0" || u.NamedCollections != "0" {
		t.Errorf("user grafana: access_management %q, named_collection_control %q; want 0 and 0", u.AccessManagement, u.NamedCollections)
	}
	if u.Password.FromEnv != "CLICKHOUSE_GRAFANA_PASSWORD" || strings.TrimSpace(u.Password.Value) != "" {
		t.Errorf("user grafana: the password must come from CLICKHOUSE_GRAFANA_PASSWORD only (from_env %q, literal %q)", u.Password.FromEnv, u.Password.Value)
	}
	if p.MaxExecutionTime != "60" || p.Constraint.Max != "60" || p.Constraint.ChangeableInReadony == nil {
		t.Errorf("profile grafana_readonly: max_execution_time %q, constraint max %q, changeable_in_readonly %v; want 60, 60, set (the Grafana plugin sets it on every query)",
			p.MaxExecutionTime, p.Constraint.Max, p.Constraint.ChangeableInReadony != nil)
	}

	s := schemaDB(t, true)
	var tables []struct{ Name, Engine string }
	if err := s.QueryInto("SELECT name AS Name, engine AS Engine FROM system.tables WHERE database = currentDatabase()", &tables); err != nil {
		t.Fatal(err)
	}
	engines := map[string]string{}
	for _, tb := range tables {
		engines[tb.Name] = tb.Engine
	}
	granted := map[string]bool{}
	for _, g := range u.Grants {
		// users.xml grants name no grantee (the enclosing user is); a
		// standalone GRANT needs one to parse.
		if _, err := s.Run("SELECT formatQuery("+chdb.Quote(g+" TO grafana")+")", "TSVRaw"); err != nil {
			t.Errorf("grant %q does not parse: %v", g, err)
		}
		m := grantRe.FindStringSubmatch(g)
		if m == nil {
			t.Errorf("grant %q: want only GRANT SELECT ON default.<table>", g)
			continue
		}
		if e := engines[m[1]]; !strings.HasSuffix(e, "MergeTree") {
			t.Errorf("grant %q: %s is %q, want a MergeTree table of the schema (never the Kafka table)", g, m[1], e)
		}
		granted[m[1]] = true
	}
	// Every table the ClickHouse dashboard reads, and no other.
	dash, err := os.ReadFile(filepath.Join(repoRoot(t), "grafana", "dashboards", "traffic-clickhouse.json"))
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"flows_raw", "flows_5m", "flows_1h", "flows_5m_enriched", "flows_errors", "alerts"} {
		if !granted[want] {
			t.Errorf("grafana has no SELECT on %s", want)
		}
	}
	for _, m := range regexp.MustCompile(`FROM (flows\w*|alerts\w*)`).FindAllStringSubmatch(string(dash), -1) {
		if !granted[m[1]] {
			t.Errorf("the ClickHouse dashboard reads %s, which grafana may not SELECT", m[1])
		}
	}
	if len(granted) != 6 {
		t.Errorf("grafana has %d grants, want the 6 tables", len(granted))
	}

	insert(t, s, mockMessages(mockSeed, 100, mockStart, mockSpan))
	ro := " SETTINGS readonly = " + p.Readonly
	var n []struct{ N uint64 }
	if err := s.QueryInto("SELECT count() AS N FROM flows_raw"+ro, &n); err != nil || len(n) != 1 || n[0].N != 100 {
		t.Errorf("SELECT with the Grafana profile: %v, %+v; want 100 rows", err, n)
	}
	for _, q := range []string{
		"INSERT INTO flows_raw" + ro + " SELECT * FROM flows_raw",
		"INSERT INTO flows_5m (Date, Timeslot, SrcAS, DstAS, Bytes, Packets, Count)" + ro + " VALUES (today(), now(), 1, 2, 3, 4, 5)",
		"ALTER TABLE flows_raw DELETE WHERE 1" + ro,
		"TRUNCATE TABLE flows_errors" + ro,
		"DROP TABLE flows_1h" + ro,
		"CREATE TABLE grafana_made (a UInt8) ENGINE = Memory" + ro,
		"SELECT * FROM url('http://127.0.0.1:1/x', 'LineAsString')" + ro,
		"SELECT * FROM file('/etc/hostname', 'LineAsString')" + ro,
		"SELECT * FROM s3('http://127.0.0.1:1/flows-bucket/x.csv', 'LineAsString')" + ro,
		"SELECT * FROM remote('127.0.0.1:1', system.one)" + ro,
		"SELECT * FROM executable('x.sh', 'TSV', 'a String')" + ro,
		"SELECT * FROM mysql('127.0.0.1:1', 'd', 't', 'u', 'p')" + ro,
		"SELECT * FROM postgresql('127.0.0.1:1', 'd', 't', 'u', 'p')" + ro,
	} {
		_, err := s.Run(q, "CSV")
		if err == nil || !strings.Contains(err.Error(), "(READONLY)") {
			t.Errorf("with the Grafana profile, %s\n  returned %v; want a READONLY refusal", q, err)
		}
	}
	if got := count(t, s, "flows_raw"); got != 100 {
		t.Errorf("flows_raw has %d rows after the refused writes, want 100", got)
	}
}

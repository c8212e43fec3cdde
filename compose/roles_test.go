package compose

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/netip"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/spendletonliveaction/flow-pipeline/inserter/pgsink"
	"github.com/spendletonliveaction/flow-pipeline/internal/pgserver"
	"github.com/spendletonliveaction/flow-pipeline/internal/testkit/testenv"
	"github.com/spendletonliveaction/flow-pipeline/pb"
)

// dotEnv reads compose/.env as compose does (KEY=value lines).
func dotEnv(t *testing.T) map[string]string {
	t.Helper()
	raw, err := os.ReadFile(".env")
	if err != nil {
		t.Fatal(err)
	}
	env := map[string]string{}
	for _, line := range strings.Split(string(raw), "\n") {
		line = strings.TrimSpace(line)
		if k, v, ok := strings.Cut(line, "="); ok && !strings.HasPrefix(line, "#") {
			env[strings.TrimSpace(k)] = strings.TrimSpace(v)
		}
	}
	return env
}

const rolesScript = "postgres/10-roles.sh"

// TestPostgresRolesMounted: both postgres stacks run the roles script at
// init, pass it the variables it needs, and connect the inserter and
// Grafana with their own roles, never the superuser.
func TestPostgresRolesMounted(t *testing.T) {
	root := repoRoot(t)
	env := dotEnv(t)
	if env["POSTGRES_INSERTER_USER"] == env["POSTGRES_USER"] || env["POSTGRES_GRAFANA_USER"] == env["POSTGRES_USER"] ||
		env["POSTGRES_INSERTER_USER"] == env["POSTGRES_GRAFANA_USER"] {
		t.Fatalf(".env: the superuser (%s), inserter (%s) and Grafana (%s) roles must differ",
			env["POSTGRES_USER"], env["POSTGRES_INSERTER_USER"], env["POSTGRES_GRAFANA_USER"])
	}
	for _, st := range stacks {
		if st.sink != "postgres" {
			continue
		}
		t.Run(st.file, func(t *testing.T) {
			p := load(t, st.file)
			pgSvc := p.Services["postgres"]
			mounted := false
			for _, v := range pgSvc.Volumes {
				if v.Target == "/docker-entrypoint-initdb.d/10-roles.sh" && v.Source == filepath.Join(root, "compose", rolesScript) {
					mounted = true
				}
			}
			if !mounted {
				t.Errorf("postgres does not mount %s at /docker-entrypoint-initdb.d/10-roles.sh", rolesScript)
			}
			for _, k := range []string{"POSTGRES_INSERTER_USER", "POSTGRES_INSERTER_PASSWORD", "POSTGRES_GRAFANA_USER",
				"POSTGRES_GRAFANA_PASSWORD", "POSTGRES_GRAFANA_STATEMENT_TIMEOUT"} {
				if v := pgSvc.Environment[k]; v == nil || *v != env[k] {
					t.Errorf("postgres service: %s = %v, want %q from .env", k, v, env[k])
				}
			}
			ins := p.Services["inserter"]
			if !slices.Contains(ins.Command, "-postgres.user="+env["POSTGRES_INSERTER_USER"]) {
				t.Errorf("inserter command %v lacks -postgres.user=%s", ins.Command, env["POSTGRES_INSERTER_USER"])
			}
			if v := ins.Environment["POSTGRES_PASSWORD"]; v == nil || *v != env["POSTGRES_INSERTER_PASSWORD"] {
				t.Errorf("inserter POSTGRES_PASSWORD = %v, want the inserter role's password", v)
			}
			g := p.Services["grafana"]
			for k, want := range map[string]string{"POSTGRES_GRAFANA_USER": env["POSTGRES_GRAFANA_USER"], "POSTGRES_GRAFANA_PASSWORD": env["POSTGRES_GRAFANA_PASSWORD"]} {
				if v := g.Environment[k]; v == nil || *v != want {
					t.Errorf("grafana %s = %v, want %q", k, v, want)
				}
			}
			for _, k := range []string{"POSTGRES_USER", "POSTGRES_PASSWORD"} {
				if _, ok := g.Environment[k]; ok {
					t.Errorf("grafana gets the superuser's %s; it must only know its own role", k)
				}
			}
		})
	}
	ds, err := os.ReadFile(filepath.Join(root, "grafana", "provisioning", "datasources", "postgres.yml"))
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"user: $POSTGRES_GRAFANA_USER", "password: $POSTGRES_GRAFANA_PASSWORD"} {
		if !strings.Contains(string(ds), want) {
			t.Errorf("grafana/provisioning/datasources/postgres.yml lacks %q", want)
		}
	}
}

func roleFlow(day time.Time, i int) *pb.FlowMessage {
	ns := uint64(day.Add(time.Hour).UnixNano()) + uint64(i)
	return &pb.FlowMessage{
		Type: pb.FlowMessage_IPFIX, TimeReceivedNs: ns, TimeFlowStartNs: ns - 2e9, TimeFlowEndNs: ns - 1e9,
		SequenceNum: uint32(i), SamplingRate: 10, SamplerAddress: netip.MustParseAddr("192.0.2.250").AsSlice(),
		SrcAddr: netip.MustParseAddr("192.0.2.1").AsSlice(), DstAddr: netip.MustParseAddr("2001:db8::1").AsSlice(),
		Bytes: 100, Packets: 1, Etype: 0x800, Proto: 6, SrcAs: 64500, DstAs: 64501,
	}
}

// sqlState is the SQLSTATE of err, or "" with no PostgreSQL error.
func sqlState(err error) string {
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) {
		return pgErr.Code
	}
	return ""
}

// TestPostgresRoles loads compose/postgres/10-roles.sh into a real
// PostgreSQL the way the postgres image does (bash, psql on the local
// server, POSTGRES_USER and POSTGRES_DB set, the other variables from .env),
// lets the inserter role create the schema and store flows, then shows what
// the Grafana role can and cannot do.
func TestPostgresRoles(t *testing.T) {
	env := dotEnv(t)
	bin, err := pgserver.FindBinDir()
	if err != nil {
		testenv.Unavailable(t, "PostgreSQL binaries: %v", err)
		return
	}
	if _, err := os.Stat(filepath.Join(bin, "psql")); err != nil {
		testenv.Unavailable(t, "psql is not in %s: %v", bin, err)
		return
	}
	pg := testenv.StartPostgres(t)
	if pg == nil {
		return
	}
	dsn := pg.CreateDB(t, "flows")
	u, err := url.Parse(dsn)
	if err != nil {
		t.Fatal(err)
	}
	script, err := filepath.Abs(rolesScript)
	if err != nil {
		t.Fatal(err)
	}
	// Twice: a second run (an operator repairing an old volume) must not fail.
	for run := 1; run <= 2; run++ {
		cmd := exec.Command("bash", script)
		cmd.Env = []string{
			"PATH=" + bin + string(os.PathListSeparator) + os.Getenv("PATH"),
			"PGHOST=" + u.Hostname(), "PGPORT=" + u.Port(),
			"POSTGRES_USER=" + u.User.Username(), "POSTGRES_DB=flows",
		}
		for _, k := range []string{"POSTGRES_INSERTER_USER", "POSTGRES_INSERTER_PASSWORD", "POSTGRES_GRAFANA_USER",
			"POSTGRES_GRAFANA_PASSWORD", "POSTGRES_GRAFANA_STATEMENT_TIMEOUT"} {
			cmd.Env = append(cmd.Env, k+"="+env[k])
		}
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("run %d of %s: %v\n%s", run, rolesScript, err, out)
		}
	}
	// A missing variable stops the init with a message naming it.
	cmd := exec.Command("bash", script)
	cmd.Env = []string{"PATH=" + os.Getenv("PATH"), "POSTGRES_USER=postgres", "POSTGRES_DB=flows"}
	if out, err := cmd.CombinedOutput(); err == nil || !strings.Contains(string(out), "POSTGRES_INSERTER_USER is not set") {
		t.Errorf("without the role variables the script must fail naming POSTGRES_INSERTER_USER; err %v, output %s", err, out)
	}

	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	as := func(role string) string {
		v := *u
		v.User = url.User(role) // trust authentication: the role is what matters
		return v.String()
	}
	inserter, grafana := env["POSTGRES_INSERTER_USER"], env["POSTGRES_GRAFANA_USER"]

	sink, err := pgsink.New(pgsink.Config{DSN: as(inserter), Group: "inserter"}, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	defer sink.Close()
	if err := sink.CreateSchema(ctx); err != nil {
		t.Fatalf("the inserter role cannot create the schema: %v", err)
	}
	today := time.Now().UTC().Truncate(24 * time.Hour)
	day1, day2 := today.AddDate(0, 0, -2), today.AddDate(0, 0, -1)
	const n1, n2 = 37, 11
	write := func(day time.Time, first, n int) {
		t.Helper()
		b := pgsink.NewBatch("flows", 0)
		b.Start = int64(first)
		for i := 0; i < n; i++ {
			b.BeginRecord(int64(first + i))
			b.AddFlow(roleFlow(day, first+i))
			b.EndRecord()
		}
		res, err := sink.Write(ctx, b)
		if err != nil {
			t.Fatalf("the inserter role cannot store flows: %v", err)
		}
		if res.Flows != n {
			t.Fatalf("stored %d flows, want %d", res.Flows, n)
		}
	}
	write(day1, 0, n1)

	super, err := pgx.Connect(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer super.Close(context.Background())
	for _, role := range []string{inserter, grafana} {
		var isSuper, createRole, createDB bool
		if err := super.QueryRow(ctx, "SELECT rolsuper, rolcreaterole, rolcreatedb FROM pg_roles WHERE rolname = $1", role).Scan(&isSuper, &createRole, &createDB); err != nil {
			t.Fatalf("role %s: %v", role, err)
		}
		if isSuper || createRole || createDB {
			t.Errorf("role %s: superuser %v, createrole %v, createdb %v; want none", role, isSuper, createRole, createDB)
		}
	}
	var owners []string
	rows, _ := super.Query(ctx, "SELECT c.relname || ':' || pg_get_userbyid(c.relowner) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = 'public' AND c.relkind IN ('r', 'p', 'v') ORDER BY 1")
	owners, err = pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"flows:" + inserter, "flows_5m:" + inserter, "flows_p" + day1.Format("20060102") + ":" + inserter,
		"flows_scaled:" + inserter, "kafka_offsets:" + inserter}
	if !containsAll(owners, want) {
		t.Errorf("tables and owners = %v, want at least %v", owners, want)
	}
	for _, o := range owners {
		if !strings.HasSuffix(o, ":"+inserter) {
			t.Errorf("%s: every table must belong to the inserter role", o)
		}
	}

	g, err := pgx.Connect(ctx, as(grafana))
	if err != nil {
		t.Fatal(err)
	}
	defer g.Close(context.Background())
	for setting, want := range map[string]string{
		"default_transaction_read_only":       "on",
		"statement_timeout":                   env["POSTGRES_GRAFANA_STATEMENT_TIMEOUT"],
		"idle_in_transaction_session_timeout": "1min",
	} {
		var got string
		if err := g.QueryRow(ctx, "SHOW "+setting).Scan(&got); err != nil {
			t.Fatal(err)
		}
		if got != want {
			t.Errorf("Grafana's %s = %q, want %q", setting, got, want)
		}
	}
	counts := func(want map[string]int64) {
		t.Helper()
		for q, n := range want {
			var got int64
			if err := g.QueryRow(ctx, q).Scan(&got); err != nil {
				t.Errorf("Grafana: %s: %v", q, err)
				continue
			}
			if got != n {
				t.Errorf("Grafana: %s = %d, want %d", q, got, n)
			}
		}
	}
	counts(map[string]int64{
		"SELECT count(*) FROM flows":                             n1,
		"SELECT count(*) FROM flows_scaled":                      n1,
		"SELECT sum(flows)::bigint FROM flows_5m":                n1,
		"SELECT max(next_offset) FROM kafka_offsets":             n1,
		"SELECT count(*) FROM flows_p" + day1.Format("20060102"): n1,
	})

	// Each write is refused twice over: by the read-only session (25006) and,
	// when Grafana turns that off (it may: it is a session setting), by the
	// missing privilege (42501). Server-side programs and files need
	// privileges Grafana does not have, read-only or not.
	for _, c := range []struct {
		name, sql           string
		readOnly, readWrite string // SQLSTATE expected
	}{
		{"INSERT", "INSERT INTO flows_5m (timeslot, src_as, dst_as, etype, bytes, packets, flows) VALUES (now(), 1, 2, 3, 4, 5, 6)", "25006", "42501"},
		{"UPDATE", "UPDATE flows SET bytes = 0", "25006", "42501"},
		{"DELETE", "DELETE FROM kafka_offsets", "25006", "42501"},
		{"TRUNCATE", "TRUNCATE flows_5m", "25006", "42501"},
		{"CREATE TABLE", "CREATE TABLE grafana_table (a int)", "25006", "42501"},
		{"CREATE TEMP TABLE", "CREATE TEMP TABLE grafana_temp (a int)", "25006", "42501"},
		{"DROP TABLE", "DROP TABLE flows_5m", "25006", "42501"},
		{"COPY TO PROGRAM", "COPY (SELECT 1) TO PROGRAM 'touch /tmp/flowpipeline-grafana-was-here'", "42501", "42501"},
		{"COPY TO file", "COPY flows TO '/tmp/flowpipeline-grafana-flows.csv'", "42501", "42501"},
		{"read a server file", "SELECT pg_read_file('postgresql.conf')", "42501", "42501"},
		{"SET ROLE inserter", "SET ROLE " + pgx.Identifier{inserter}.Sanitize(), "42501", "42501"},
	} {
		for _, mode := range []struct{ begin, want string }{{"BEGIN", c.readOnly}, {"BEGIN READ WRITE", c.readWrite}} {
			if _, err := g.Exec(ctx, mode.begin); err != nil {
				t.Fatal(err)
			}
			_, err := g.Exec(ctx, c.sql)
			if _, rerr := g.Exec(ctx, "ROLLBACK"); rerr != nil {
				t.Fatal(rerr)
			}
			if got := sqlState(err); got != mode.want {
				t.Errorf("Grafana %s after %s: SQLSTATE %q (%v), want %s", c.name, mode.begin, got, err, mode.want)
			}
		}
	}
	if _, err := os.Stat("/tmp/flowpipeline-grafana-was-here"); err == nil {
		t.Error("COPY TO PROGRAM ran a program for Grafana")
	}
	// The inserter is no superuser either.
	conn, err := pgx.Connect(ctx, as(inserter))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())
	if _, err := conn.Exec(ctx, "COPY (SELECT 1) TO PROGRAM 'true'"); sqlState(err) != "42501" {
		t.Errorf("inserter COPY TO PROGRAM: %v, want SQLSTATE 42501", err)
	}

	// A partition the inserter creates after the grants is readable too:
	// default privileges, since partitions are created by the inserter role.
	write(day2, n1, n2)
	part2 := "flows_p" + day2.Format("20060102")
	var parts []string
	rows, _ = g.Query(ctx, "SELECT tableoid::regclass::text || '=' || count(*) FROM flows GROUP BY tableoid ORDER BY 1")
	parts, err = pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		t.Fatal(err)
	}
	wantParts := []string{fmt.Sprintf("flows_p%s=%d", day1.Format("20060102"), n1), fmt.Sprintf("%s=%d", part2, n2)}
	if strings.Join(parts, " ") != strings.Join(wantParts, " ") {
		t.Errorf("Grafana: rows per partition = %v, want %v", parts, wantParts)
	}
	counts(map[string]int64{
		"SELECT count(*) FROM " + part2:           n2,
		"SELECT count(*) FROM flows":              n1 + n2,
		"SELECT sum(flows)::bigint FROM flows_5m": n1 + n2,
	})
}

func containsAll(have, want []string) bool {
	set := map[string]bool{}
	for _, h := range have {
		set[h] = true
	}
	for _, w := range want {
		if !set[w] {
			return false
		}
	}
	return true
}

// TestClickHouseGrafanaUser: both clickhouse stacks load the read-only user
// of clickhouse-users.xml, and Grafana connects as it, knowing only its
// password; the admin user stays with ClickHouse. (What the user may do is
// tested on chDB in compose/clickhouse, TestGrafanaUser.)
func TestClickHouseGrafanaUser(t *testing.T) {
	root := repoRoot(t)
	env := dotEnv(t)
	for _, st := range stacks {
		if st.sink != "clickhouse" {
			continue
		}
		t.Run(st.file, func(t *testing.T) {
			p := load(t, st.file)
			// The cluster's file is derived from clickhouse-users.xml
			// (compose/clickhouse, TestClusterSchemaUpToDate).
			users := filepath.Join(root, "compose", "clickhouse-users.xml")
			if st.cluster {
				users = filepath.Join(root, "compose", "clickhouse-cluster", "users.xml")
			}
			for _, name := range sinkServices(st.sink, st.cluster) {
				ch := p.Services[name]
				mounted := false
				for _, v := range ch.Volumes {
					if v.Target == "/etc/clickhouse-server/users.d/flow-pipeline.xml" && v.Source == users {
						mounted = true
					}
				}
				if !mounted {
					t.Errorf("%s does not mount %s at /etc/clickhouse-server/users.d/flow-pipeline.xml", name, users)
				}
				if v := ch.Environment["CLICKHOUSE_GRAFANA_PASSWORD"]; v == nil || *v != env["CLICKHOUSE_GRAFANA_PASSWORD"] {
					t.Errorf("%s CLICKHOUSE_GRAFANA_PASSWORD = %v, want %q (read by from_env)", name, v, env["CLICKHOUSE_GRAFANA_PASSWORD"])
				}
				if v := ch.Environment["CLICKHOUSE_DEFAULT_ACCESS_MANAGEMENT"]; v == nil || *v != "0" {
					t.Errorf("%s CLICKHOUSE_DEFAULT_ACCESS_MANAGEMENT = %v, want 0", name, v)
				}
			}
			g := p.Services["grafana"]
			if v := g.Environment["CLICKHOUSE_GRAFANA_PASSWORD"]; v == nil || *v != env["CLICKHOUSE_GRAFANA_PASSWORD"] {
				t.Errorf("grafana CLICKHOUSE_GRAFANA_PASSWORD = %v, want %q", v, env["CLICKHOUSE_GRAFANA_PASSWORD"])
			}
			for _, k := range []string{"CLICKHOUSE_USER", "CLICKHOUSE_PASSWORD"} {
				if _, ok := g.Environment[k]; ok {
					t.Errorf("grafana gets the ClickHouse admin's %s", k)
				}
			}
		})
	}
	ds, err := os.ReadFile(filepath.Join(root, "grafana", "provisioning", "datasources", "clickhouse.yml"))
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"username: grafana\n", "password: $CLICKHOUSE_GRAFANA_PASSWORD\n"} {
		if !strings.Contains(string(ds), want) {
			t.Errorf("grafana/provisioning/datasources/clickhouse.yml lacks %q", strings.TrimSpace(want))
		}
	}
}

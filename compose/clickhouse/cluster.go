package clickhouse

import (
	"errors"
	"fmt"
	"maps"
	"path"
	"regexp"
	"slices"
	"sort"
	"strings"
)

// The cluster schema (compose/clickhouse-cluster/sql) is not written by
// hand: Cluster derives it from the single-node files of this directory,
// statement by statement, so a column or a table added here reaches the
// cluster when the files are regenerated, and anything the rules below do
// not know stops the derivation with an error instead of slipping through.
//
// The rules:
//   - CREATE TABLE T … ENGINE = <X>MergeTree[(args)] becomes T_local with
//     ENGINE = Replicated<X>MergeTree(ReplicaPath, '{replica}'[, args]),
//     followed by CREATE TABLE T AS T_local ENGINE = Distributed(flows_cluster,
//     currentDatabase(), T_local, rand()): queries keep the name T.
//   - CREATE MATERIALIZED VIEW … TO … AS SELECT: every table renamed above is
//     read and written as T_local, so a view works on its own node's rows.
//   - CREATE TABLE … ENGINE = Kafka: kafka_broker_list 'kafka:9092' becomes
//     the cluster's three brokers; the consumer group stays, shared by every
//     node.
//   - CREATE TABLE … ENGINE = Null and CREATE VIEW: unchanged.
//   - Anything else (another engine, a statement other than CREATE TABLE or
//     VIEW, a materialized view without TO) is an error.

// ClusterName is the cluster of remote_servers in
// compose/clickhouse-cluster/cluster.xml.
const ClusterName = "flows_cluster"

// ClusterBrokers replaces kafka_broker_list = 'kafka:9092'.
const ClusterBrokers = "kafka1:9092,kafka2:9092,kafka3:9092"

// ReplicaPath is the Keeper path of a replicated table: one per shard,
// database and table ({shard} and {replica} are each node's macros).
const ReplicaPath = "/clickhouse/tables/{shard}/{database}/{table}"

// LocalSuffix names the per-node table behind a Distributed one.
const LocalSuffix = "_local"

// File is one schema file: its base name and its text.
type File struct {
	Name, Text string
}

// ErrUnknownStatement marks a statement the cluster rules do not cover.
var ErrUnknownStatement = errors.New("statement the cluster derivation does not know")

var (
	createTableRe = regexp.MustCompile(`(?is)^CREATE\s+TABLE\s+(?:IF\s+NOT\s+EXISTS\s+)?(\w+)`)
	createMVRe    = regexp.MustCompile(`(?is)^CREATE\s+MATERIALIZED\s+VIEW\s+(?:IF\s+NOT\s+EXISTS\s+)?(\w+)`)
	mvToRe        = regexp.MustCompile(`(?is)^CREATE\s+MATERIALIZED\s+VIEW\s+(?:IF\s+NOT\s+EXISTS\s+)?\w+\s+TO\s+\w+`)
	createViewRe  = regexp.MustCompile(`(?is)^CREATE\s+VIEW\s`)
	engineRe      = regexp.MustCompile(`(?i)\bENGINE\s*=\s*(\w+)`)
	brokersRe     = regexp.MustCompile(`(?i)\bkafka_broker_list\s*=\s*'kafka:9092'`)
)

// Cluster derives the cluster schema from the single-node files, in the
// same order and under the same names, and lists the tables it made
// T_local. Each output file starts with a header naming its source; the
// single-node comments are kept.
func Cluster(files []File) (out []File, local []string, err error) {
	type stmt struct {
		file        int
		start, end  int // in the file's text
		raw, code   string
		ident       string // code with quoted text blanked, for names
		kind, table string
	}
	var all []stmt
	isLocal := map[string]bool{}
	for i, f := range files {
		noComments, noText, spans, err := scan(f.Text)
		if err != nil {
			return nil, nil, fmt.Errorf("%s: %w", f.Name, err)
		}
		for _, sp := range spans {
			s := stmt{file: i, start: sp[0], end: sp[1], raw: f.Text[sp[0]:sp[1]],
				code: noComments[sp[0]:sp[1]], ident: noText[sp[0]:sp[1]]}
			switch {
			case createMVRe.MatchString(s.ident):
				if !mvToRe.MatchString(s.ident) {
					return nil, nil, fmt.Errorf("%s: materialized view %s has no TO table; the cluster derivation needs one (write into a table of the schema): %w",
						f.Name, createMVRe.FindStringSubmatch(s.ident)[1], ErrUnknownStatement)
				}
				s.kind = "mv"
			case createViewRe.MatchString(s.ident):
				s.kind = "view"
			case createTableRe.MatchString(s.ident):
				s.table = createTableRe.FindStringSubmatch(s.ident)[1]
				m := engineRe.FindStringSubmatch(s.ident)
				if m == nil {
					return nil, nil, fmt.Errorf("%s: table %s names no ENGINE: %w", f.Name, s.table, ErrUnknownStatement)
				}
				switch engine := m[1]; {
				case strings.EqualFold(engine, "Kafka"):
					s.kind = "kafka"
				case strings.EqualFold(engine, "Null"):
					s.kind = "null"
				case strings.HasSuffix(engine, "MergeTree") && !strings.HasPrefix(engine, "Replicated"):
					s.kind = "mergetree"
					isLocal[s.table] = true
					local = append(local, s.table)
				default:
					return nil, nil, fmt.Errorf("%s: table %s has ENGINE = %s, which the cluster derivation does not know (it knows *MergeTree, Kafka and Null): %w",
						f.Name, s.table, engine, ErrUnknownStatement)
				}
			default:
				return nil, nil, fmt.Errorf("%s: %.60q…: only CREATE TABLE, CREATE VIEW and CREATE MATERIALIZED VIEW can be derived: %w",
					f.Name, strings.Join(strings.Fields(s.raw), " "), ErrUnknownStatement)
			}
			all = append(all, s)
		}
	}
	names := slices.Sorted(maps.Keys(isLocal))

	type edit struct {
		start, end int
		with       string
	}
	edits := make([][]edit, len(files))
	for _, s := range all {
		var es []edit
		add := func(start, end int, with string) { es = append(es, edit{s.start + start, s.start + end, with}) }
		switch s.kind {
		case "mergetree":
			loc := createTableRe.FindStringSubmatchIndex(s.ident)
			add(loc[2], loc[3], s.table+LocalSuffix)
			e := engineRe.FindStringSubmatchIndex(s.ident)
			end, args := e[1], ""
			if rest := strings.TrimLeft(s.ident[end:], " \t\r\n"); strings.HasPrefix(rest, "(") {
				open := len(s.ident) - len(rest)
				closing, err := matchParen(s.ident, open)
				if err != nil {
					return nil, nil, fmt.Errorf("%s: table %s: ENGINE arguments: %w", files[s.file].Name, s.table, err)
				}
				args, end = strings.TrimSpace(s.raw[open+1:closing]), closing+1
			}
			engine := "Replicated" + s.ident[e[2]:e[3]] + "('" + ReplicaPath + "', '{replica}'"
			if args != "" {
				engine += ", " + args
			}
			add(e[0], end, "ENGINE = "+engine+")")
			add(len(s.raw), len(s.raw), ";\n\n"+distributed(s.table))
		case "mv":
			for _, n := range names {
				re := regexp.MustCompile(`\b` + n + `\b`)
				for _, loc := range re.FindAllStringIndex(s.ident, -1) {
					add(loc[0], loc[1], n+LocalSuffix)
				}
			}
		case "kafka":
			loc := brokersRe.FindStringIndex(s.code)
			if loc == nil {
				return nil, nil, fmt.Errorf("%s: Kafka table %s has no kafka_broker_list = 'kafka:9092' to point at the cluster's brokers: %w",
					files[s.file].Name, s.table, ErrUnknownStatement)
			}
			add(loc[0], loc[1], "kafka_broker_list = '"+ClusterBrokers+"'")
			add(0, 0, kafkaComment)
		}
		edits[s.file] = append(edits[s.file], es...)
	}

	out = make([]File, len(files))
	for i, f := range files {
		es := edits[i]
		sort.Slice(es, func(a, b int) bool { return es[a].start > es[b].start })
		text := f.Text
		for _, e := range es {
			text = text[:e.start] + e.with + text[e.end:]
		}
		out[i] = File{Name: f.Name, Text: header(f.Name) + text}
	}
	return out, local, nil
}

// RegenerateCommand rewrites the cluster files from the single-node ones.
const RegenerateCommand = "go test ./compose/clickhouse -run TestClusterSchemaUpToDate -update"

func header(name string) string {
	return "-- GENERATED from compose/clickhouse/" + path.Base(name) + " by\n" +
		"--   " + RegenerateCommand + "\n" +
		"-- Do not edit: edit the single-node file, then regenerate. The test fails\n" +
		"-- while this file differs from what the single-node file gives.\n" +
		"--\n" +
		"-- Cluster (" + ClusterName + ", docs/clickhouse.md \"Cluster\"): every MergeTree\n" +
		"-- table T of the single-node file is T" + LocalSuffix + " here, Replicated, on every\n" +
		"-- node, and T is a Distributed table over T" + LocalSuffix + " of every shard, so\n" +
		"-- queries keep the names. Views read and write the T" + LocalSuffix + " tables of\n" +
		"-- their own node. The comments below are the single-node file's: read T\n" +
		"-- in them as the whole cluster, and run ALTER on T" + LocalSuffix + " ON CLUSTER\n" +
		"-- " + ClusterName + ".\n\n"
}

func distributed(table string) string {
	l := table + LocalSuffix
	return "-- Cluster: " + table + " reads " + l + " of every shard of " + ClusterName + "\n" +
		"-- (one replica each) and adds nothing itself. The pipeline never inserts\n" +
		"-- here: each node's Kafka table and views write that node's " + l + ".\n" +
		"-- The sharding key rand() is for INSERTs into " + table + " by hand (a\n" +
		"-- backfill): each such row goes to one shard, picked at random.\n" +
		"CREATE TABLE IF NOT EXISTS " + table + " AS " + l + "\n" +
		"ENGINE = Distributed(" + ClusterName + ", currentDatabase(), " + l + ", rand())"
}

const kafkaComment = `-- Cluster: every node runs this table, in the one consumer group
-- kafka_group_name. Kafka gives each partition to one member of a group at
-- a time, so each record is read by one node, and that node's views write
-- its flows to its own *_local tables: a flow lands on exactly one shard,
-- the shard of the node that read it (after a crash, at-least-once still
-- holds: a block may be read again, by the same or another node). The
-- other replica of that shard gets the rows by replication, not from
-- Kafka. Writing through the Distributed tables instead would add a hop
-- and a queue on the reading node's disk, between the Kafka commit and the
-- shard. Partitions spread over the nodes evenly only when their number is
-- a multiple of the nodes' (12 for 4 nodes).
`

// matchParen returns the index of the parenthesis closing the one at open.
func matchParen(s string, open int) (int, error) {
	depth := 0
	for i := open; i < len(s); i++ {
		switch s[i] {
		case '(':
			depth++
		case ')':
			depth--
			if depth == 0 {
				return i, nil
			}
		}
	}
	return 0, fmt.Errorf("unbalanced parenthesis at byte %d", open)
}

// scan blanks a SQL script's comments (noComments), and also its quoted
// strings and identifiers (noText), keeping every byte's position and the
// newlines, and returns the [start, end) spans of its statements: the code
// between semicolons, without the whitespace and comments around it.
func scan(script string) (noComments, noText string, spans [][2]int, err error) {
	nc, nt := []byte(script), []byte(script)
	blank := func(b []byte, from, to int) {
		for i := from; i < to; i++ {
			if b[i] != '\n' {
				b[i] = ' '
			}
		}
	}
	stmtStart := 0
	flush := func(end int) {
		s, e := stmtStart, end
		for s < e && isSpace(nc[s]) {
			s++
		}
		for e > s && isSpace(nc[e-1]) {
			e--
		}
		if s < e {
			spans = append(spans, [2]int{s, e})
		}
	}
	for i := 0; i < len(script); i++ {
		switch c := script[i]; {
		case c == '-' && i+1 < len(script) && script[i+1] == '-':
			end := strings.IndexByte(script[i:], '\n')
			if end < 0 {
				end = len(script) - i
			}
			blank(nc, i, i+end)
			blank(nt, i, i+end)
			i += end - 1
		case c == '/' && i+1 < len(script) && script[i+1] == '*':
			end := strings.Index(script[i+2:], "*/")
			if end < 0 {
				return "", "", nil, fmt.Errorf("unterminated /* comment at byte %d", i)
			}
			blank(nc, i, i+2+end+2)
			blank(nt, i, i+2+end+2)
			i += 2 + end + 1
		case c == '\'' || c == '"' || c == '`':
			j := i + 1
			for ; j < len(script); j++ {
				if script[j] == '\\' {
					j++
					continue
				}
				if script[j] == c {
					if j+1 < len(script) && script[j+1] == c {
						j++
						continue
					}
					break
				}
			}
			if j >= len(script) {
				return "", "", nil, fmt.Errorf("unterminated %c quote at byte %d", c, i)
			}
			blank(nt, i+1, j)
			i = j
		case c == ';':
			flush(i)
			stmtStart = i + 1
		}
	}
	flush(len(script))
	return string(nc), string(nt), spans, nil
}

func isSpace(c byte) bool { return c == ' ' || c == '\t' || c == '\n' || c == '\r' }

// ClusterUsers derives the cluster's users file from the single-node one:
// each table Grafana may read gets the same grant on its T_local, which a
// Distributed query reads on every shard as the querying user (the
// cluster's <secret> passes the user on). local lists the tables made
// T_local (those of Cluster's MergeTree rule).
func ClusterUsers(single string, local []string) (string, error) {
	grant := regexp.MustCompile(`(?m)^(\s*)<query>GRANT SELECT ON default\.(\w+)</query>\n`)
	isLocal := map[string]bool{}
	for _, n := range local {
		isLocal[n] = true
	}
	n := 0
	out := grant.ReplaceAllStringFunc(single, func(line string) string {
		m := grant.FindStringSubmatch(line)
		if !isLocal[m[2]] {
			return line
		}
		n++
		return line + m[1] + "<query>GRANT SELECT ON default." + m[2] + LocalSuffix + "</query>\n"
	})
	if n == 0 {
		return "", errors.New("the users file grants SELECT on no table of the schema; nothing to derive")
	}
	const root = "<clickhouse>"
	i := strings.Index(out, root)
	if i < 0 {
		return "", errors.New("the users file has no <clickhouse> element")
	}
	return out[:i] + "<!-- GENERATED from compose/clickhouse-users.xml by\n       " + RegenerateCommand +
		"\n     Do not edit. Each SELECT grant of a table T is repeated for T" + LocalSuffix + ". -->\n" + out[i:], nil
}

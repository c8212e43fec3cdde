package chdb

import (
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
)

// SplitStatements splits a SQL script on the semicolons that end its
// statements, dropping -- and /* */ comments. Quoted strings and
// identifiers ('…', "…", `…`) are kept intact, semicolons included.
func SplitStatements(script string) ([]string, error) {
	var (
		stmts []string
		cur   strings.Builder
	)
	flush := func() {
		if s := strings.TrimSpace(cur.String()); s != "" {
			stmts = append(stmts, s)
		}
		cur.Reset()
	}
	for i := 0; i < len(script); i++ {
		c := script[i]
		switch {
		case c == '-' && i+1 < len(script) && script[i+1] == '-':
			// A line comment ends at the newline, which is kept.
			for i < len(script) && script[i] != '\n' {
				i++
			}
			cur.WriteByte('\n')
		case c == '/' && i+1 < len(script) && script[i+1] == '*':
			end := strings.Index(script[i+2:], "*/")
			if end < 0 {
				return nil, fmt.Errorf("unterminated /* comment at byte %d", i)
			}
			i += 2 + end + 1
			cur.WriteByte(' ')
		case c == '\'' || c == '"' || c == '`':
			j := i + 1
			for ; j < len(script); j++ {
				if script[j] == '\\' {
					j++ // escaped character
					continue
				}
				if script[j] == c {
					if j+1 < len(script) && script[j+1] == c {
						j++ // doubled quote
						continue
					}
					break
				}
			}
			if j >= len(script) {
				return nil, fmt.Errorf("unterminated %c quote at byte %d", c, i)
			}
			cur.WriteString(script[i : j+1])
			i = j
		case c == ';':
			flush()
		default:
			cur.WriteByte(c)
		}
	}
	flush()
	return stmts, nil
}

// KafkaVirtualColumns are the virtual columns of ClickHouse's Kafka engine
// (with kafka_handle_error_mode = 'stream'), as ordinary columns, so that
// materialized views reading them work on the stand-in table.
var KafkaVirtualColumns = []string{
	"_topic LowCardinality(String)",
	"_key String",
	"_offset UInt64",
	"_partition UInt64",
	"_timestamp Nullable(DateTime)",
	"_timestamp_ms Nullable(DateTime64(3))",
	"_error String",
	"_raw_message String",
}

var kafkaEngine = regexp.MustCompile(`(?is)\)\s*ENGINE\s*=\s*Kafka\b.*$`)

// SwapKafkaEngine turns a CREATE TABLE … ENGINE = Kafka statement into the
// same table with ENGINE = Null plus the Kafka virtual columns: inserting
// into it then fires its materialized views exactly as a consumed Kafka
// block would. chDB can declare a Kafka table but never consumes it.
// Statements of other engines come back unchanged with swapped false.
func SwapKafkaEngine(stmt string) (out string, swapped bool) {
	loc := kafkaEngine.FindStringIndex(stmt)
	if loc == nil {
		return stmt, false
	}
	cols := strings.TrimRight(stmt[:loc[0]], " \t\r\n,")
	return cols + ",\n    " + strings.Join(KafkaVirtualColumns, ",\n    ") + "\n) ENGINE = Null", true
}

// SchemaFiles lists the *.sql files of dir in lexical order, the order in
// which the clickhouse-server image applies /docker-entrypoint-initdb.d.
func SchemaFiles(dir string) ([]string, error) {
	files, err := filepath.Glob(filepath.Join(dir, "*.sql"))
	if err != nil {
		return nil, fmt.Errorf("list the schema files in %s: %w", dir, err)
	}
	if len(files) == 0 {
		return nil, fmt.Errorf("no *.sql files in %s", dir)
	}
	sort.Strings(files)
	return files, nil
}

// ApplySchema runs every statement of the *.sql files of dir, in lexical
// order. With swapKafka, Kafka-engine tables are created by
// SwapKafkaEngine instead; it is an error if no statement was swapped.
func (s *Session) ApplySchema(dir string, swapKafka bool) error {
	files, err := SchemaFiles(dir)
	if err != nil {
		return err
	}
	swaps := 0
	for _, f := range files {
		script, err := os.ReadFile(f)
		if err != nil {
			return fmt.Errorf("read schema file: %w", err)
		}
		stmts, err := SplitStatements(string(script))
		if err != nil {
			return fmt.Errorf("%s: %w", filepath.Base(f), err)
		}
		for _, stmt := range stmts {
			if swapKafka {
				var swapped bool
				if stmt, swapped = SwapKafkaEngine(stmt); swapped {
					swaps++
				}
			}
			if err := s.Exec(stmt); err != nil {
				return fmt.Errorf("apply %s: %w", filepath.Base(f), err)
			}
		}
	}
	if swapKafka && swaps == 0 {
		return fmt.Errorf("no ENGINE = Kafka table in %s to swap", dir)
	}
	return nil
}

// Distributed is a Distributed table of a cluster schema, as ApplyCluster
// found it.
type Distributed struct {
	Name, Cluster, Local string
}

var (
	replicatedEngine  = regexp.MustCompile(`ENGINE\s*=\s*Replicated(\w*MergeTree)\('[^']*',\s*'[^']*'(?:,\s*)?`)
	distributedEngine = regexp.MustCompile(`(?s)^CREATE TABLE IF NOT EXISTS (\w+) AS (\w+)\s+ENGINE\s*=\s*Distributed\((\w+),\s*currentDatabase\(\),\s*(\w+)(?:,.*)?\)$`)
)

// ApplyCluster runs a cluster schema (compose/clickhouse-cluster/sql) on
// chDB, which has neither Keeper nor other servers: every statement of the
// *.sql files of dir runs in each database of shards (created if absent),
// Kafka tables swapped as by SwapKafkaEngine, Replicated*MergeTree
// engines swapped for their plain counterparts, and each Distributed table
// created last, in every shard database, as a view over its local table
// in all of them (UNION ALL): what a Distributed query reads. It returns
// the Distributed tables it replaced.
func (s *Session) ApplyCluster(dir string, shards []string) ([]Distributed, error) {
	files, err := SchemaFiles(dir)
	if err != nil {
		return nil, err
	}
	var dist []Distributed
	for i, db := range shards {
		if err := s.Exec("CREATE DATABASE IF NOT EXISTS " + db + "; USE " + db); err != nil {
			return nil, err
		}
		for _, f := range files {
			script, err := os.ReadFile(f)
			if err != nil {
				return nil, fmt.Errorf("read schema file: %w", err)
			}
			stmts, err := SplitStatements(string(script))
			if err != nil {
				return nil, fmt.Errorf("%s: %w", filepath.Base(f), err)
			}
			for _, stmt := range stmts {
				if m := distributedEngine.FindStringSubmatch(stmt); m != nil {
					if i == 0 {
						if m[2] != m[4] {
							return nil, fmt.Errorf("%s: Distributed table %s is AS %s but reads %s", filepath.Base(f), m[1], m[2], m[4])
						}
						dist = append(dist, Distributed{Name: m[1], Cluster: m[3], Local: m[4]})
					}
					continue
				}
				stmt, _ = SwapKafkaEngine(stmt)
				stmt = replicatedEngine.ReplaceAllString(stmt, "ENGINE = $1(")
				if strings.Contains(stmt, "Distributed") || strings.Contains(stmt, "Replicated") {
					return nil, fmt.Errorf("%s: a Distributed or replicated table this stand-in does not know: %.200s", filepath.Base(f), stmt)
				}
				if err := s.Exec(stmt); err != nil {
					return nil, fmt.Errorf("apply %s to %s: %w", filepath.Base(f), db, err)
				}
			}
		}
	}
	for _, db := range shards {
		for _, d := range dist {
			var parts []string
			for _, shard := range shards {
				parts = append(parts, "SELECT * FROM "+shard+"."+d.Local)
			}
			if err := s.Exec("CREATE VIEW " + db + "." + d.Name + " AS " + strings.Join(parts, " UNION ALL ")); err != nil {
				return nil, fmt.Errorf("the stand-in of Distributed table %s: %w", d.Name, err)
			}
		}
	}
	return dist, nil
}

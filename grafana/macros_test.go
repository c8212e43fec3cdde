package grafana

import (
	"fmt"
	"math"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"
)

// queryContext is what Grafana hands a datasource with each query: the
// panel's time range, the interval it picked, and template variable values
// ("$__all" for All).
type queryContext struct {
	from, to time.Time
	interval time.Duration
	vars     map[string]string
}

// macroCall finds "$__name(" and returns the name, the top-level arguments
// and the end of the call; ok is false for a macro without parentheses.
func macroCall(sql string, start int) (name string, args []string, end int, ok bool, err error) {
	i := start + len("$__")
	j := i
	for j < len(sql) && (sql[j] == '_' || sql[j] >= 'a' && sql[j] <= 'z' || sql[j] >= 'A' && sql[j] <= 'Z' || sql[j] >= '0' && sql[j] <= '9') {
		j++
	}
	name = sql[i:j]
	if j >= len(sql) || sql[j] != '(' {
		return name, nil, j, false, nil
	}
	depth, quote, argStart := 0, byte(0), j+1
	for k := j; k < len(sql); k++ {
		c := sql[k]
		switch {
		case quote != 0:
			if c == quote {
				quote = 0
			}
		case c == '\'' || c == '"':
			quote = c
		case c == '(':
			depth++
		case c == ')':
			depth--
			if depth == 0 {
				if a := strings.TrimSpace(sql[argStart:k]); a != "" || len(args) > 0 {
					args = append(args, a)
				}
				return name, args, k + 1, true, nil
			}
		case c == ',' && depth == 1:
			args = append(args, strings.TrimSpace(sql[argStart:k]))
			argStart = k + 1
		}
	}
	return name, nil, 0, false, fmt.Errorf("unbalanced parentheses after $__%s", name)
}

// expand replaces every $__macro in sql with fn's expansion; fn returns
// ok=false for a name it does not know, which is an error: Grafana would
// send the text through and the database would reject it.
func expand(sql string, fn func(name string, args []string, call bool) (string, error)) (string, error) {
	var b strings.Builder
	for {
		i := strings.Index(sql, "$__")
		if i < 0 {
			b.WriteString(sql)
			return b.String(), nil
		}
		b.WriteString(sql[:i])
		name, args, end, call, err := macroCall(sql, i)
		if err != nil {
			return "", err
		}
		out, err := fn(name, args, call)
		if err != nil {
			return "", fmt.Errorf("$__%s: %w", name, err)
		}
		// Arguments may hold macros or variables too ($__interval).
		b.WriteString(out)
		sql = sql[end:]
	}
}

func wantArgs(args []string, n int) error {
	if len(args) != n {
		return fmt.Errorf("want %d argument(s), got %d (%q)", n, len(args), args)
	}
	return nil
}

// grafanaInterval formats an interval as Grafana's $__interval does.
func grafanaInterval(d time.Duration) string {
	switch {
	case d%(24*time.Hour) == 0:
		return fmt.Sprintf("%dd", d/(24*time.Hour))
	case d%time.Hour == 0:
		return fmt.Sprintf("%dh", d/time.Hour)
	case d%time.Minute == 0:
		return fmt.Sprintf("%dm", d/time.Minute)
	case d%time.Second == 0:
		return fmt.Sprintf("%ds", d/time.Second)
	}
	return fmt.Sprintf("%dms", d/time.Millisecond)
}

// parseGrafanaInterval reads "5m", "1h", "30s", "100ms", "1d".
func parseGrafanaInterval(s string) (time.Duration, error) {
	s = strings.Trim(strings.TrimSpace(s), `'"`)
	if n, ok := strings.CutSuffix(s, "d"); ok {
		v, err := strconv.Atoi(n)
		return time.Duration(v) * 24 * time.Hour, err
	}
	return time.ParseDuration(s)
}

// globalVars replaces Grafana's global variables, which the frontend
// interpolates before the datasource sees the query.
func globalVars(sql string, q queryContext) string {
	return globalVarRe.ReplaceAllStringFunc(sql, func(m string) string {
		switch strings.Trim(m, "${}") {
		case "__interval_ms":
			return strconv.FormatInt(q.interval.Milliseconds(), 10)
		case "__interval":
			return grafanaInterval(q.interval)
		case "__range_s":
			return strconv.FormatInt(int64(q.to.Sub(q.from).Seconds()), 10)
		}
		return m
	})
}

// globalVarRe matches whole variable names only: $__interval must not eat
// the start of the ClickHouse macro $__interval_s.
var globalVarRe = regexp.MustCompile(`\$\{__(interval_ms|interval|range_s)\}|\$__(interval_ms|interval|range_s)\b`)

var leftoverVar = regexp.MustCompile(`\$\{?[A-Za-z_]\w*`)

// expandPostgres expands a query as Grafana's PostgreSQL datasource does
// (pkg/tsdb/grafana-postgresql-datasource macros).
func expandPostgres(sql string, q queryContext) (string, error) {
	sql = globalVars(sql, q)
	ts := func(t time.Time) string { return "'" + t.UTC().Format(time.RFC3339) + "'" }
	out, err := expand(sql, func(name string, args []string, call bool) (string, error) {
		switch name {
		case "timeFilter":
			if err := wantArgs(args, 1); err != nil {
				return "", err
			}
			return fmt.Sprintf("%s BETWEEN %s AND %s", args[0], ts(q.from), ts(q.to)), nil
		case "timeFrom":
			return ts(q.from), nil
		case "timeTo":
			return ts(q.to), nil
		case "unixEpochFilter":
			if err := wantArgs(args, 1); err != nil {
				return "", err
			}
			return fmt.Sprintf("%s >= %d AND %s <= %d", args[0], q.from.Unix(), args[0], q.to.Unix()), nil
		case "unixEpochFrom":
			return strconv.FormatInt(q.from.Unix(), 10), nil
		case "unixEpochTo":
			return strconv.FormatInt(q.to.Unix(), 10), nil
		case "timeGroup", "timeGroupAlias":
			if len(args) < 2 {
				return "", fmt.Errorf("want a column and an interval, got %q", args)
			}
			d, err := parseGrafanaInterval(args[1])
			if err != nil || d <= 0 {
				return "", fmt.Errorf("interval %q: %v", args[1], err)
			}
			s := fmt.Sprintf("floor(extract(epoch from %s)/%v)*%v", args[0], d.Seconds(), d.Seconds())
			if name == "timeGroupAlias" {
				s += ` AS "time"`
			}
			return s, nil
		case "time":
			if err := wantArgs(args, 1); err != nil {
				return "", err
			}
			return args[0] + ` AS "time"`, nil
		case "timeEpoch":
			if err := wantArgs(args, 1); err != nil {
				return "", err
			}
			return fmt.Sprintf(`extract(epoch from %s) as "time"`, args[0]), nil
		}
		return "", fmt.Errorf("not a macro of Grafana's PostgreSQL datasource")
	})
	if err != nil {
		return "", err
	}
	if m := leftoverVar.FindString(out); m != "" {
		return "", fmt.Errorf("%s is left in the query after expansion", m)
	}
	return out, nil
}

// expandClickHouse expands a query as the grafana-clickhouse-datasource
// plugin does (pkg/macros and the frontend's $__conditionalAll).
func expandClickHouse(sql string, q queryContext) (string, error) {
	// $__conditionalAll is expanded by the plugin's frontend, with the
	// variable's value: the condition, or 1=1 when All is selected.
	sql, err := expand(sql, func(name string, args []string, call bool) (string, error) {
		if name != "conditionalAll" {
			return "$__" + name + rest(args, call), nil
		}
		if err := wantArgs(args, 2); err != nil {
			return "", err
		}
		v, ok := q.vars[strings.Trim(args[1], "${}")]
		if !ok {
			return "", fmt.Errorf("unknown variable %s", args[1])
		}
		if v == "$__all" {
			return "1=1", nil
		}
		return strings.ReplaceAll(args[0], args[1], v), nil
	})
	if err != nil {
		return "", err
	}
	sql = globalVars(sql, q)
	dt := func(t time.Time) string { return fmt.Sprintf("toDateTime(%d)", t.Unix()) }
	ms := func(t time.Time) string { return fmt.Sprintf("fromUnixTimestamp64Milli(%d)", t.UnixMilli()) }
	date := func(t time.Time) string { return fmt.Sprintf("toDate('%s')", t.UTC().Format("2006-01-02")) }
	secs := int(math.Max(q.interval.Seconds(), 1))
	out, err := expand(sql, func(name string, args []string, call bool) (string, error) {
		switch name {
		case "timeFilter", "timeFilter_ms", "dateFilter":
			if err := wantArgs(args, 1); err != nil {
				return "", err
			}
			f := map[string]func(time.Time) string{"timeFilter": dt, "timeFilter_ms": ms, "dateFilter": date}[name]
			return fmt.Sprintf("%s >= %s AND %s <= %s", args[0], f(q.from), args[0], f(q.to)), nil
		case "fromTime":
			return dt(q.from), nil
		case "toTime":
			return dt(q.to), nil
		case "fromTime_ms":
			return ms(q.from), nil
		case "toTime_ms":
			return ms(q.to), nil
		case "timeInterval":
			if err := wantArgs(args, 1); err != nil {
				return "", err
			}
			return fmt.Sprintf("toStartOfInterval(toDateTime(%s), INTERVAL %d second)", args[0], secs), nil
		case "timeInterval_ms":
			if err := wantArgs(args, 1); err != nil {
				return "", err
			}
			return fmt.Sprintf("toStartOfInterval(toDateTime64(%s, 3), INTERVAL %d millisecond)", args[0], max(q.interval.Milliseconds(), 1)), nil
		case "interval_s":
			return strconv.Itoa(secs), nil
		}
		return "", fmt.Errorf("not a macro of the ClickHouse plugin")
	})
	if err != nil {
		return "", err
	}
	if m := leftoverVar.FindString(out); m != "" {
		return "", fmt.Errorf("%s is left in the query after expansion", m)
	}
	return out, nil
}

func rest(args []string, call bool) string {
	if !call {
		return ""
	}
	return "(" + strings.Join(args, ", ") + ")"
}

var testCtx = queryContext{
	from:     time.Date(2026, 3, 1, 10, 0, 0, 0, time.UTC),
	to:       time.Date(2026, 3, 1, 11, 0, 0, 0, time.UTC),
	interval: 5 * time.Minute,
	vars:     map[string]string{"exporter": "'192.0.2.1'", "all": "$__all"},
}

func TestExpandPostgres(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"WHERE $__timeFilter(time_received)", "WHERE time_received BETWEEN '2026-03-01T10:00:00Z' AND '2026-03-01T11:00:00Z'"},
		{"SELECT $__timeGroupAlias(time_received, $__interval)", `SELECT floor(extract(epoch from time_received)/300)*300 AS "time"`},
		{"SELECT $__timeGroup(t, '1h')", "SELECT floor(extract(epoch from t)/3600)*3600"},
		{"x > $__timeFrom() AND x < $__timeTo()", "x > '2026-03-01T10:00:00Z' AND x < '2026-03-01T11:00:00Z'"},
		{"$__unixEpochFilter(ts)", "ts >= 1772359200 AND ts <= 1772362800"},
		{"sum(b) * 1000.0 / $__interval_ms", "sum(b) * 1000.0 / 300000"},
		{"WHERE f(x, 'a,(b') AND $__timeFilter(t)", "WHERE f(x, 'a,(b') AND t BETWEEN '2026-03-01T10:00:00Z' AND '2026-03-01T11:00:00Z'"},
	} {
		got, err := expandPostgres(tc.in, testCtx)
		if err != nil || got != tc.want {
			t.Errorf("expandPostgres(%q) = %q, %v; want %q", tc.in, got, err, tc.want)
		}
	}
	for _, bad := range []string{"$__nope(x)", "$__timeFilter(a, b)", "$__timeFilter(x", "WHERE a = $host"} {
		if got, err := expandPostgres(bad, testCtx); err == nil {
			t.Errorf("expandPostgres(%q) = %q, want an error", bad, got)
		}
	}
}

func TestExpandClickHouse(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"WHERE $__timeFilter(TimeReceived)", "WHERE TimeReceived >= toDateTime(1772359200) AND TimeReceived <= toDateTime(1772362800)"},
		{"$__timeFilter_ms(T)", "T >= fromUnixTimestamp64Milli(1772359200000) AND T <= fromUnixTimestamp64Milli(1772362800000)"},
		{"$__dateFilter(Date)", "Date >= toDate('2026-03-01') AND Date <= toDate('2026-03-01')"},
		{"$__fromTime, $__toTime", "toDateTime(1772359200), toDateTime(1772362800)"},
		{"$__fromTime_ms", "fromUnixTimestamp64Milli(1772359200000)"},
		{"$__timeInterval(TimeReceived)", "toStartOfInterval(toDateTime(TimeReceived), INTERVAL 300 second)"},
		{"$__timeInterval_ms(T)", "toStartOfInterval(toDateTime64(T, 3), INTERVAL 300000 millisecond)"},
		{"x / $__interval_s", "x / 300"},
		{"$__conditionalAll(SamplerAddress IN ($exporter), $exporter)", "SamplerAddress IN ('192.0.2.1')"},
		{"$__conditionalAll(SamplerAddress IN ($all), $all) AND $__timeFilter(T)", "1=1 AND T >= toDateTime(1772359200) AND T <= toDateTime(1772362800)"},
	} {
		got, err := expandClickHouse(tc.in, testCtx)
		if err != nil || got != tc.want {
			t.Errorf("expandClickHouse(%q) = %q, %v; want %q", tc.in, got, err, tc.want)
		}
	}
	for _, bad := range []string{"$__nope(x)", "$__timeInterval()", "$__conditionalAll(a)", "$__conditionalAll(a IN ($zz), $zz)"} {
		if got, err := expandClickHouse(bad, testCtx); err == nil {
			t.Errorf("expandClickHouse(%q) = %q, want an error", bad, got)
		}
	}
}

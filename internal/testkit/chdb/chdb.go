// Package chdb runs ClickHouse SQL on a real ClickHouse engine from Go
// tests, without a server: chDB (the engine as a Python module, PyPI
// chdb-core) in one long-lived python3 process per Session.
//
// A Session speaks JSON lines with chdb_server.py over stdin/stdout. When
// python3 or chdb is missing, Start skips the test loudly, or fails it when
// FLOWPIPELINE_REQUIRE_SERVICES=1 (CI).
package chdb

import (
	"bufio"
	"bytes"
	_ "embed"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/spendletonliveaction/flow-pipeline/internal/testkit/testenv"
)

//go:embed chdb_server.py
var serverScript []byte

// PipInstall is the command that installs the engine, as CI runs it.
const PipInstall = "pip install chdb-core==26.9.0"

// ErrUnavailable marks a start failure caused by a missing python3 or chdb,
// as opposed to a broken engine.
var ErrUnavailable = errors.New("chDB unavailable")

// Session is one chDB session: a database directory and the python3
// process that queries it. Its methods are safe for concurrent use; queries
// run one at a time.
type Session struct {
	dir     string
	version string

	mu     sync.Mutex
	cmd    *exec.Cmd
	stdin  io.WriteCloser
	out    *bufio.Reader
	stderr string // file with the process's stderr, quoted on failure
	closed bool
	files  int
}

type request struct {
	SQL    string `json:"sql"`
	Format string `json:"format"`
}

type response struct {
	Ready       string  `json:"ready"`
	Unavailable string  `json:"unavailable"`
	Data        *string `json:"data"`
	Error       *string `json:"error"`
}

// New starts a session whose database lives in dir (created if needed).
// Errors wrapping ErrUnavailable mean python3 or chdb is not installed.
func New(dir string) (*Session, error) {
	py, err := exec.LookPath("python3")
	if err != nil {
		return nil, fmt.Errorf("%w: python3 is not on PATH; install Python 3 and run: %s", ErrUnavailable, PipInstall)
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("create the chDB session directory: %w", err)
	}
	script := filepath.Join(dir, "chdb_server.py")
	if err := os.WriteFile(script, serverScript, 0o644); err != nil {
		return nil, fmt.Errorf("write the chDB server script: %w", err)
	}
	s := &Session{dir: dir, stderr: filepath.Join(dir, "chdb_server.stderr")}
	errFile, err := os.Create(s.stderr)
	if err != nil {
		return nil, fmt.Errorf("create the chDB stderr log: %w", err)
	}
	defer errFile.Close() // the child keeps its own descriptor

	s.cmd = exec.Command(py, script, filepath.Join(dir, "db"))
	s.cmd.Stderr = errFile
	if s.stdin, err = s.cmd.StdinPipe(); err != nil {
		return nil, fmt.Errorf("chDB stdin pipe: %w", err)
	}
	stdout, err := s.cmd.StdoutPipe()
	if err != nil {
		return nil, fmt.Errorf("chDB stdout pipe: %w", err)
	}
	s.out = bufio.NewReaderSize(stdout, 1<<20)
	if err := s.cmd.Start(); err != nil {
		return nil, fmt.Errorf("%w: cannot run python3: %v", ErrUnavailable, err)
	}

	var hello response
	if err := s.read(&hello); err != nil {
		s.Close()
		return nil, fmt.Errorf("chDB server did not start: %w", err)
	}
	if hello.Unavailable != "" {
		s.Close()
		return nil, fmt.Errorf("%w: %s; install it with: %s", ErrUnavailable, hello.Unavailable, PipInstall)
	}
	s.version = hello.Ready
	// Plain JSON numbers for 64-bit integers, so results decode into uint64.
	if err := s.Exec("SET output_format_json_quote_64bit_integers = 0"); err != nil {
		s.Close()
		return nil, err
	}
	return s, nil
}

// Start starts a session for t in a temporary directory, closed when the
// test ends. A missing python3 or chdb skips t, or fails it in CI.
func Start(t testing.TB) *Session {
	t.Helper()
	s, err := New(t.TempDir())
	if err != nil {
		if errors.Is(err, ErrUnavailable) {
			testenv.Unavailable(t, "%v", err)
			return nil
		}
		t.Fatalf("start chDB: %v", err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// Version is the chdb Python package version.
func (s *Session) Version() string { return s.version }

// Dir is the session's directory; files written under it can be read with
// ClickHouse's file() table function or FROM INFILE.
func (s *Session) Dir() string { return s.dir }

// Close ends the python3 process. The directory is left to its owner.
func (s *Session) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil
	}
	s.closed = true
	s.stdin.Close() // the server exits at end of input
	return s.cmd.Wait()
}

func (s *Session) read(r *response) error {
	line, err := s.out.ReadBytes('\n')
	if err != nil {
		return fmt.Errorf("read from the chDB process: %w (stderr: %s)", err, s.stderrTail())
	}
	if err := json.Unmarshal(line, r); err != nil {
		return fmt.Errorf("unreadable answer from the chDB process %.200q: %w", line, err)
	}
	return nil
}

func (s *Session) stderrTail() string {
	b, _ := os.ReadFile(s.stderr)
	if len(b) > 2000 {
		b = b[len(b)-2000:]
	}
	if len(bytes.TrimSpace(b)) == 0 {
		return "empty"
	}
	return string(b)
}

// Run executes one or more statements and returns the output in format
// (any ClickHouse output format: CSV, JSONEachRow, PrettyCompact, ...).
func (s *Session) Run(sql, format string) (string, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return "", errors.New("chDB session is closed")
	}
	req, err := json.Marshal(request{SQL: sql, Format: format})
	if err != nil {
		return "", fmt.Errorf("encode the chDB request: %w", err)
	}
	if _, err := s.stdin.Write(append(req, '\n')); err != nil {
		return "", fmt.Errorf("send the query to the chDB process: %w (stderr: %s)", err, s.stderrTail())
	}
	var r response
	if err := s.read(&r); err != nil {
		return "", err
	}
	if r.Error != nil {
		return "", fmt.Errorf("chDB: %s\nquery: %s", *r.Error, abbreviate(sql))
	}
	if r.Data == nil {
		return "", errors.New("chDB answered neither data nor error")
	}
	return *r.Data, nil
}

// Exec executes statements whose output does not matter.
func (s *Session) Exec(sql string) error {
	_, err := s.Run(sql, "CSV")
	return err
}

// Query returns the rows of a query as maps, numbers as json.Number.
func (s *Session) Query(sql string) ([]map[string]any, error) {
	out, err := s.Run(sql, "JSONEachRow")
	if err != nil {
		return nil, err
	}
	var rows []map[string]any
	dec := json.NewDecoder(strings.NewReader(out))
	dec.UseNumber()
	for dec.More() {
		var row map[string]any
		if err := dec.Decode(&row); err != nil {
			return nil, fmt.Errorf("decode a JSONEachRow row: %w", err)
		}
		rows = append(rows, row)
	}
	return rows, nil
}

// QueryInto decodes the rows of a query into dst, a pointer to a slice of
// structs (fields matched by name or json tag, as encoding/json does).
func (s *Session) QueryInto(sql string, dst any) error {
	out, err := s.Run(sql, "JSONEachRow")
	if err != nil {
		return err
	}
	rows := strings.Split(strings.TrimSpace(out), "\n")
	if len(rows) == 1 && rows[0] == "" {
		rows = nil
	}
	arr := "[" + strings.Join(rows, ",") + "]"
	if err := json.Unmarshal([]byte(arr), dst); err != nil {
		return fmt.Errorf("decode the rows of %s: %w", abbreviate(sql), err)
	}
	return nil
}

// InsertProtobuf inserts length-delimited protobuf messages (the Kafka
// record framing) into table. schema is "/abs/file.proto:Message".
func (s *Session) InsertProtobuf(table string, data []byte, schema string) error {
	s.mu.Lock()
	s.files++
	path := filepath.Join(s.dir, fmt.Sprintf("insert-%d.bin", s.files))
	s.mu.Unlock()
	if err := os.WriteFile(path, data, 0o644); err != nil {
		return fmt.Errorf("write the protobuf input file: %w", err)
	}
	defer os.Remove(path)
	return s.Exec(fmt.Sprintf("INSERT INTO %s FROM INFILE %s SETTINGS format_schema = %s FORMAT Protobuf",
		table, Quote(path), Quote(schema)))
}

// Quote returns s as a ClickHouse string literal.
func Quote(s string) string {
	return "'" + strings.NewReplacer(`\`, `\\`, `'`, `\'`).Replace(s) + "'"
}

func abbreviate(sql string) string {
	sql = strings.Join(strings.Fields(sql), " ")
	if len(sql) > 300 {
		return sql[:300] + "..."
	}
	return sql
}

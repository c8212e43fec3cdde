// Package pgserver runs a private PostgreSQL server from the machine's
// server binaries (initdb, postgres): no Docker, no system service. The
// caller chooses the data directory; an empty or missing one is initialised
// (trust authentication, superuser "postgres"), an existing cluster is
// reused. The server listens on 127.0.0.1 only, with its unix socket in the
// data directory, so it never collides with a system PostgreSQL.
//
// PostgreSQL refuses to run as root; when we are root the server runs as an
// unprivileged user (Debian's "postgres" by default).
package pgserver

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/spendletonliveaction/flow-pipeline/internal/proc"
)

// ErrNotFound means no PostgreSQL server binaries were found.
var ErrNotFound = errors.New("PostgreSQL server binaries (initdb, postgres) not found")

// ErrNoRunAsUser means we are root and Options.RunAs names no user to run
// PostgreSQL as.
var ErrNoRunAsUser = errors.New("no user to run PostgreSQL as")

// installHint names the package that provides initdb and postgres.
const installHint = "install the PostgreSQL server package (Debian/Ubuntu: apt-get install postgresql; Fedora: dnf install postgresql-server)"

// BinEnv names the environment variable that points at the directory
// holding initdb and postgres; it overrides the search.
const BinEnv = "FLOWPIPELINE_PG_BIN"

// SuperUser is the superuser initdb creates; it needs no password.
const SuperUser = "postgres"

// Options configures a Server. Zero values take the defaults shown.
type Options struct {
	// DataDir is the cluster directory (PGDATA). Required. It is created
	// and initialised when missing or empty, and reused when it holds a
	// cluster.
	DataDir string
	// BinDir holds initdb and postgres; default FindBinDir().
	BinDir string
	// Port on 127.0.0.1; 0 picks a free port at the first Start and keeps
	// it for later restarts.
	Port int
	// LogPath receives the server's output; default DataDir + ".log".
	LogPath string
	// RunAs is the OS user that runs the server when we are root
	// (PostgreSQL refuses root); default "postgres". Ignored otherwise.
	RunAs string
	// NoSync trades crash safety for speed in a cluster this Server
	// creates (initdb --no-sync, fsync = off in its postgresql.conf, where
	// ALTER SYSTEM can still turn it on): for throwaway servers. A server
	// crash (Kill) still recovers; only an OS crash can lose data.
	NoSync bool
	// StartTimeout bounds initdb plus the wait for connections (default
	// 60s); StopTimeout bounds a fast shutdown before it kills (default 30s).
	StartTimeout time.Duration
	StopTimeout  time.Duration
}

func (o *Options) setDefaults() {
	if o.LogPath == "" && o.DataDir != "" {
		o.LogPath = filepath.Clean(o.DataDir) + ".log"
	}
	if o.RunAs == "" {
		o.RunAs = "postgres"
	}
	if o.StartTimeout == 0 {
		o.StartTimeout = 60 * time.Second
	}
	if o.StopTimeout == 0 {
		o.StopTimeout = 30 * time.Second
	}
}

func (o *Options) validate() error {
	var errs []error
	if o.DataDir == "" {
		errs = append(errs, errors.New("pgserver: no data directory given"))
	}
	if o.Port < 0 || o.Port > 65535 {
		errs = append(errs, fmt.Errorf("pgserver: port %d: want 1-65535, or 0 for a free port", o.Port))
	}
	if o.StartTimeout < 0 || o.StopTimeout < 0 {
		errs = append(errs, errors.New("pgserver: timeouts must not be negative"))
	}
	return errors.Join(errs...)
}

// Server is one private PostgreSQL server. Its methods are safe for
// concurrent use.
type Server struct {
	opts    Options
	logger  *slog.Logger
	cred    *syscall.Credential // user to run as when we are root, else nil
	dataDir string              // absolute

	mu      sync.Mutex
	port    int
	created bool // initdb ran in this process
	p       *proc.Proc
}

// New checks opts and locates the binaries; it starts nothing. A missing
// binary directory is an error wrapping ErrNotFound.
func New(opts Options, logger *slog.Logger) (*Server, error) {
	opts.setDefaults()
	if err := opts.validate(); err != nil {
		return nil, err
	}
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	if opts.BinDir == "" {
		dir, err := FindBinDir()
		if err != nil {
			return nil, err
		}
		opts.BinDir = dir
	} else if !hasServer(opts.BinDir) {
		return nil, fmt.Errorf("%w in %s: %s, or point at the directory that holds them", ErrNotFound, opts.BinDir, installHint)
	}
	dataDir, err := filepath.Abs(opts.DataDir)
	if err != nil {
		return nil, fmt.Errorf("pgserver: data directory %q: %w", opts.DataDir, err)
	}
	cred, err := credential(opts.RunAs)
	if err != nil {
		return nil, err
	}
	return &Server{opts: opts, logger: logger, cred: cred, dataDir: dataDir, port: opts.Port}, nil
}

// Start is New followed by Server.Start.
func Start(ctx context.Context, opts Options, logger *slog.Logger) (*Server, error) {
	s, err := New(opts, logger)
	if err != nil {
		return nil, err
	}
	if err := s.Start(ctx); err != nil {
		return nil, err
	}
	return s, nil
}

// FindBinDir locates the directory holding initdb and postgres: $BinEnv
// (no fallback when set), then `pg_config --bindir`, then the newest
// /usr/lib/postgresql/*/bin (Debian keeps them off PATH), then PATH.
func FindBinDir() (string, error) {
	if dir := os.Getenv(BinEnv); dir != "" {
		if hasServer(dir) {
			return dir, nil
		}
		return "", fmt.Errorf("%w: %s=%s holds no initdb and postgres: %s, then set %s to their directory (such as /usr/lib/postgresql/15/bin) or unset it", ErrNotFound, BinEnv, dir, installHint, BinEnv)
	}
	if out, err := exec.Command("pg_config", "--bindir").Output(); err == nil {
		if dir := strings.TrimSpace(string(out)); hasServer(dir) {
			return dir, nil
		}
	}
	dirs, _ := filepath.Glob("/usr/lib/postgresql/*/bin")
	major := func(dir string) float64 {
		v, _ := strconv.ParseFloat(filepath.Base(filepath.Dir(dir)), 64)
		return v
	}
	sort.Slice(dirs, func(i, j int) bool { return major(dirs[i]) > major(dirs[j]) })
	for _, dir := range dirs {
		if hasServer(dir) {
			return dir, nil
		}
	}
	if initdb, err := exec.LookPath("initdb"); err == nil && hasServer(filepath.Dir(initdb)) {
		return filepath.Dir(initdb), nil
	}
	return "", fmt.Errorf("%w: %s, or set %s to their directory", ErrNotFound, installHint, BinEnv)
}

func hasServer(dir string) bool {
	return isExecutable(filepath.Join(dir, "initdb")) && isExecutable(filepath.Join(dir, "postgres"))
}

func isExecutable(path string) bool {
	fi, err := os.Stat(path)
	return err == nil && fi.Mode().IsRegular() && fi.Mode()&0o111 != 0
}

// credential returns the user to run PostgreSQL as: nil (ourselves) unless
// we are root, which initdb and postgres refuse.
func credential(name string) (*syscall.Credential, error) {
	if os.Geteuid() != 0 {
		return nil, nil
	}
	u, err := user.Lookup(name)
	if err != nil {
		return nil, fmt.Errorf("pgserver: %w: running as root, and there is no %q user (PostgreSQL refuses root): create one (useradd --system %s) or run as an ordinary user", ErrNoRunAsUser, name, name)
	}
	uid, _ := strconv.ParseUint(u.Uid, 10, 32)
	gid, _ := strconv.ParseUint(u.Gid, 10, 32)
	cred := &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}
	// Without supplementary groups set explicitly, the child would keep
	// root's; give it the user's own.
	if ids, err := u.GroupIds(); err == nil {
		for _, id := range ids {
			if g, err := strconv.ParseUint(id, 10, 32); err == nil {
				cred.Groups = append(cred.Groups, uint32(g))
			}
		}
	}
	return cred, nil
}

// DSN is the URL of the "postgres" database as the superuser.
func (s *Server) DSN() string { return s.DSNFor("postgres") }

// DSNFor is the URL of database db as the superuser.
func (s *Server) DSNFor(db string) string {
	return fmt.Sprintf("postgres://%s@127.0.0.1:%d/%s?sslmode=disable", SuperUser, s.Port(), url.PathEscape(db))
}

// Port is the TCP port on 127.0.0.1 (0 before the first Start with a free port).
func (s *Server) Port() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.port
}

// DataDir is the absolute cluster directory.
func (s *Server) DataDir() string { return s.dataDir }

// BinDir is the directory of the binaries in use.
func (s *Server) BinDir() string { return s.opts.BinDir }

// LogPath is the file the server logs to.
func (s *Server) LogPath() string { return s.opts.LogPath }

// Created reports whether this Server ran initdb (rather than reusing an
// existing cluster).
func (s *Server) Created() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.created
}

// Running reports whether the server process is alive.
func (s *Server) Running() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.p.Running()
}

// Start initialises the data directory if needed, starts the server and
// waits until it accepts connections (after crash recovery, following
// Kill). It may be called again after Stop or Kill; the port stays.
func (s *Server) Start(ctx context.Context) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.p.Running() {
		return errors.New("pgserver: the server is already running")
	}
	ctx, cancel := context.WithTimeout(ctx, s.opts.StartTimeout)
	defer cancel()
	if err := s.prepare(ctx); err != nil {
		return err
	}
	if s.port == 0 {
		port, err := proc.FreePort()
		if err != nil {
			return fmt.Errorf("pgserver: %w", err)
		}
		s.port = port
	} else if err := portFree(s.port); err != nil {
		return err
	}
	// postgres directly rather than pg_ctl: we own its pid, so Stop and Kill
	// signal the server itself. Settings on the command line win over
	// postgresql.conf, so a reused cluster can move to another port.
	cmd := exec.Command(filepath.Join(s.opts.BinDir, "postgres"), "-D", s.dataDir,
		"-p", strconv.Itoa(s.port),
		"-c", "listen_addresses=127.0.0.1",
		"-c", "unix_socket_directories="+s.dataDir)
	cmd.Dir = s.dataDir
	cmd.Env = cleanEnv()
	p, err := proc.Start(cmd, s.opts.LogPath, s.cred)
	if err != nil {
		return fmt.Errorf("pgserver: %w", err)
	}
	s.p = p
	err = p.AwaitReady(ctx, 50*time.Millisecond, func(ctx context.Context) error {
		ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		defer cancel()
		return ping(ctx, s.dsnLocked())
	})
	if err != nil {
		return fmt.Errorf("pgserver: PostgreSQL did not start on 127.0.0.1:%d: %w\n%s", s.port, err, p.LogTail(20))
	}
	s.logger.Info("PostgreSQL started", "port", s.port, "data_dir", s.dataDir, "created", s.created)
	return nil
}

func (s *Server) dsnLocked() string {
	return fmt.Sprintf("postgres://%s@127.0.0.1:%d/postgres?sslmode=disable&connect_timeout=2", SuperUser, s.port)
}

func ping(ctx context.Context, dsn string) error {
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		return err
	}
	defer conn.Close(context.Background())
	return conn.Ping(ctx)
}

// prepare makes sure the data directory holds a cluster the binaries can
// run, running initdb into a missing or empty directory.
func (s *Server) prepare(ctx context.Context) error {
	dir := s.dataDir
	if err := os.MkdirAll(filepath.Dir(dir), 0o755); err != nil {
		return fmt.Errorf("pgserver: create the parent of the data directory: %w", err)
	}
	if s.cred != nil {
		if err := s.checkReachable(dir); err != nil {
			return err
		}
	}
	if version, err := os.ReadFile(filepath.Join(dir, "PG_VERSION")); err == nil {
		return s.checkVersion(ctx, strings.TrimSpace(string(version)))
	}
	entries, err := os.ReadDir(dir)
	switch {
	case errors.Is(err, os.ErrNotExist):
		if err := os.Mkdir(dir, 0o700); err != nil {
			return fmt.Errorf("pgserver: create the data directory: %w", err)
		}
	case err != nil:
		return fmt.Errorf("pgserver: read the data directory: %w", err)
	case len(entries) > 0:
		return fmt.Errorf("pgserver: %s is neither empty nor a PostgreSQL cluster (no PG_VERSION): choose another data directory or empty it", dir)
	}
	if s.cred != nil {
		if err := os.Chown(dir, int(s.cred.Uid), int(s.cred.Gid)); err != nil {
			return fmt.Errorf("pgserver: hand the data directory to uid %d: %w", s.cred.Uid, err)
		}
	}
	args := []string{"-D", dir, "-U", SuperUser, "--auth=trust", "--encoding=UTF8", "--locale=C", "--no-instructions"}
	if s.opts.NoSync {
		args = append(args, "--no-sync")
	}
	cmd := exec.CommandContext(ctx, filepath.Join(s.opts.BinDir, "initdb"), args...)
	cmd.Dir = dir
	cmd.Env = cleanEnv()
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: s.cred}
	if out, err := cmd.CombinedOutput(); err != nil {
		// Leave no half-made cluster behind: the next Start would refuse it.
		if entries, _ := os.ReadDir(dir); len(entries) > 0 {
			for _, e := range entries {
				os.RemoveAll(filepath.Join(dir, e.Name()))
			}
		}
		return fmt.Errorf("pgserver: initdb %s failed: %w\n%s", dir, err, bytes.TrimSpace(out))
	}
	if s.opts.NoSync {
		if err := appendConf(dir, noSyncConf); err != nil {
			return err
		}
	}
	s.created = true
	s.logger.Info("PostgreSQL cluster initialised", "data_dir", dir)
	return nil
}

// noSyncConf goes into the postgresql.conf of a NoSync cluster. In the
// file rather than on the command line, which would override ALTER SYSTEM.
const noSyncConf = `
# Written by pgserver (Options.NoSync): the data is thrown away. fsync only
# protects against an OS crash or power loss: after a PostgreSQL crash (Kill)
# written WAL is still in the page cache, so crash recovery still works.
fsync = off
`

func appendConf(dataDir, conf string) error {
	f, err := os.OpenFile(filepath.Join(dataDir, "postgresql.conf"), os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		return fmt.Errorf("pgserver: %w", err)
	}
	_, err = f.WriteString(conf)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("pgserver: write postgresql.conf: %w", err)
	}
	return nil
}

// checkVersion fails clearly when the cluster was made by another major
// version than the binaries, instead of a server log line.
func (s *Server) checkVersion(ctx context.Context, cluster string) error {
	out, err := exec.CommandContext(ctx, filepath.Join(s.opts.BinDir, "postgres"), "-V").Output()
	if err != nil {
		return nil // the server start will say what is wrong
	}
	// "postgres (PostgreSQL) 15.10 (Debian 15.10-0+deb12u1)"
	f := strings.Fields(string(out))
	if len(f) < 3 {
		return nil
	}
	binMajor, _, _ := strings.Cut(f[2], ".")
	if binMajor != cluster {
		return fmt.Errorf("pgserver: %s holds a PostgreSQL %s cluster but the binaries in %s are version %s: use matching binaries (%s) or start afresh with an empty data directory",
			s.dataDir, cluster, s.opts.BinDir, binMajor, BinEnv)
	}
	return nil
}

// checkReachable fails clearly when the server user cannot traverse to dir
// (a data directory under root's 0700 home is the usual case).
func (s *Server) checkReachable(dir string) error {
	groups := map[uint32]bool{s.cred.Gid: true}
	for _, g := range s.cred.Groups {
		groups[g] = true
	}
	for d := filepath.Dir(dir); ; d = filepath.Dir(d) {
		fi, err := os.Stat(d)
		if err != nil {
			return fmt.Errorf("pgserver: %w", err)
		}
		if st, ok := fi.Sys().(*syscall.Stat_t); ok {
			m := fi.Mode().Perm()
			ok := m&0o001 != 0 || (st.Uid == s.cred.Uid && m&0o100 != 0) || (groups[st.Gid] && m&0o010 != 0)
			if !ok {
				return fmt.Errorf("pgserver: PostgreSQL runs as user %q (uid %d), which cannot enter %s (mode %s): choose a data directory it can reach, e.g. under /var/lib or /var/tmp",
					s.opts.RunAs, s.cred.Uid, d, m)
			}
		}
		if d == filepath.Dir(d) {
			return nil
		}
	}
}

// Stop shuts the server down ("fast": sessions are ended, the checkpoint is
// written) and waits until it has exited, killing it after StopTimeout.
func (s *Server) Stop() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.p.Running() {
		return errors.New("pgserver: the server is not running")
	}
	if !s.p.Stop(syscall.SIGINT, s.opts.StopTimeout) {
		return fmt.Errorf("pgserver: PostgreSQL did not stop within %s and was killed; see %s", s.opts.StopTimeout, s.opts.LogPath)
	}
	s.logger.Info("PostgreSQL stopped", "port", s.port)
	return nil
}

// Kill crashes the server (SIGKILL to the postmaster and every backend);
// the next Start runs crash recovery. For fault tests.
func (s *Server) Kill() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.p.Running() {
		return errors.New("pgserver: the server is not running")
	}
	s.p.Kill()
	return nil
}

// portFree turns PostgreSQL's "could not bind" log line into a clear error
// before starting.
func portFree(port int) error {
	l, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(port)))
	if err != nil {
		return fmt.Errorf("pgserver: port %d on 127.0.0.1 is in use (another PostgreSQL, or this data directory's server still running?): choose another port, or 0 for a free one: %w", port, err)
	}
	l.Close()
	return nil
}

// cleanEnv is our environment without PG* variables, which would point
// initdb and the server elsewhere (PGDATA, PGPORT, ...).
func cleanEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "PG") {
			env = append(env, kv)
		}
	}
	return env
}

package testinfra

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"syscall"
	"testing"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2"

	"github.com/tally-billing/tally/internal/chx"
)

// ClickHouseServer is a ClickHouse engine of the test's own (the chDB library and launcher
// `make up` installed, its own ports and data directory), for tests that kill and restart
// ClickHouse without disturbing the tests beside them on the shared one.
type ClickHouseServer struct {
	t                  testing.TB
	dir, lib, launcher string
	tcpPort, httpPort  int
	cmd                *exec.Cmd
	exited             chan struct{}
}

// StartClickHouse starts an engine on a fresh data directory; it is killed when the test ends.
func StartClickHouse(t testing.TB) *ClickHouseServer {
	t.Helper()
	requireIntegration(t)
	root := moduleRoot(t)
	raw, err := os.ReadFile(filepath.Join(root, "deploy", "local", "versions.env"))
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile(`(?m)^CHDB_VERSION=(\S+)`).FindSubmatch(raw)
	if m == nil {
		t.Fatal("deploy/local/versions.env has no CHDB_VERSION")
	}
	s := &ClickHouseServer{t: t, dir: t.TempDir(), launcher: filepath.Join(root, ".state", "bin", "chlaunch"),
		lib: filepath.Join(cacheDir(), "chdb-"+string(m[1]), "libchdb.so"), tcpPort: freePort(t), httpPort: freePort(t)}
	for _, f := range []string{s.launcher, s.lib} {
		if _, err := os.Stat(f); err != nil {
			t.Fatalf("%s is missing (%v): run `make up` (it builds and fetches it)", f, err)
		}
	}
	t.Cleanup(func() {
		s.Kill()
		if t.Failed() {
			raw, _ := os.ReadFile(filepath.Join(s.dir, "launcher.log"))
			t.Logf("the test ClickHouse's output, last lines:\n%s", tail(string(raw), 3000))
		}
	})
	s.Start()
	return s
}

// HTTPConfig is how a role reaches it over HTTP, in database db.
func (s *ClickHouseServer) HTTPConfig(db string) chx.Config {
	return chx.Config{Addr: fmt.Sprintf("127.0.0.1:%d", s.httpPort), Protocol: clickhouse.HTTP, Username: "default", Database: db}
}

// HTTPURL is its HTTP interface.
func (s *ClickHouseServer) HTTPURL() string { return fmt.Sprintf("http://127.0.0.1:%d", s.httpPort) }

// Start runs the engine (again) on its data directory and waits until it answers queries.
func (s *ClickHouseServer) Start() {
	s.t.Helper()
	log, err := os.OpenFile(filepath.Join(s.dir, "launcher.log"), os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o600)
	if err != nil {
		s.t.Fatal(err)
	}
	if err := os.MkdirAll(filepath.Join(s.dir, "data"), 0o755); err != nil {
		s.t.Fatal(err)
	}
	s.cmd = exec.Command(s.launcher, s.lib, filepath.Join(s.dir, "data"), fmt.Sprint(s.tcpPort), fmt.Sprint(s.httpPort), "127.0.0.1",
		"--logger.log="+filepath.Join(s.dir, "server.log"), "--logger.level=warning")
	s.cmd.Stdout, s.cmd.Stderr = log, log
	if err := s.cmd.Start(); err != nil {
		s.t.Fatal(err)
	}
	s.exited = make(chan struct{})
	go func(cmd *exec.Cmd, done chan struct{}) { _ = cmd.Wait(); log.Close(); close(done) }(s.cmd, s.exited)
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	for {
		if chx.PingHTTP(ctx, s.HTTPURL(), nil) == nil {
			if conn, err := chx.Open(ctx, s.HTTPConfig("")); err == nil {
				err = chx.SelectOne(ctx, conn)
				_ = conn.Close()
				if err == nil {
					return
				}
			}
		}
		select {
		case <-s.exited:
			s.t.Fatal("the test ClickHouse exited while starting")
		case <-ctx.Done():
			s.t.Fatal("the test ClickHouse did not answer within 90 s")
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// Kill ends the engine with SIGKILL and waits for it.
func (s *ClickHouseServer) Kill() {
	if s.cmd == nil || s.cmd.Process == nil {
		return
	}
	select {
	case <-s.exited:
		return
	default:
	}
	_ = s.cmd.Process.Signal(syscall.SIGKILL)
	<-s.exited
}

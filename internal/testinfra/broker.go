package testinfra

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"

	"github.com/tally-billing/tally/internal/kafkax"
)

// Broker is a Kafka broker of the test's own (same jars and settings as `make up`'s, its own
// ports and data directory), for tests that stop, kill and restart Kafka without disturbing the
// tests running beside them on the shared one. It costs a JVM (about 300 MB) and a few seconds
// per start.
type Broker struct {
	t                    testing.TB
	dir, libs            string
	port, controllerPort int
	cmd                  *exec.Cmd
	exited               chan struct{}
}

// StartBroker formats a data directory and starts a broker on it; it is killed when the test ends.
func StartBroker(t testing.TB) *Broker {
	t.Helper()
	requireIntegration(t)
	libs := os.Getenv("TALLY_TEST_KAFKA_LIBS")
	if libs == "" {
		libs = defaultKafkaLibs(t)
	}
	if _, err := os.Stat(filepath.Join(libs, "kafka_2.13-"+kafkaVersion(t)+".jar")); err != nil {
		t.Fatalf("the Kafka jars are not in %s (%v): run `make up` (it fetches them), or set TALLY_TEST_KAFKA_LIBS", libs, err)
	}
	b := &Broker{t: t, dir: t.TempDir(), libs: libs, port: freePort(t), controllerPort: freePort(t)}
	tmpl, err := os.ReadFile(filepath.Join(moduleRoot(t), "deploy", "local", "kafka", "server.properties.tmpl"))
	if err != nil {
		t.Fatal(err)
	}
	props := strings.NewReplacer("@STATE@", b.dir, "@CONTROLLER_PORT@", fmt.Sprint(b.controllerPort), "@PORT@", fmt.Sprint(b.port)).Replace(string(tmpl))
	if err := os.WriteFile(b.props(), []byte(props), 0o600); err != nil {
		t.Fatal(err)
	}
	if out, err := b.java("kafka.tools.StorageTool", "format", "-t", "MkU3OEVBNTcwNTJENDM2Qk", "-c", b.props()).CombinedOutput(); err != nil {
		t.Fatalf("format the broker's storage: %v\n%s", err, out)
	}
	t.Cleanup(func() {
		b.Kill()
		if t.Failed() {
			raw, _ := os.ReadFile(filepath.Join(b.dir, "kafka.log"))
			t.Logf("the test broker's log, last lines:\n%s", tail(string(raw), 4000))
		}
	})
	b.Start()
	return b
}

// Brokers are the broker's addresses.
func (b *Broker) Brokers() []string { return []string{fmt.Sprintf("127.0.0.1:%d", b.port)} }

func (b *Broker) props() string { return filepath.Join(b.dir, "server.properties") }

func (b *Broker) java(class string, args ...string) *exec.Cmd {
	log4j := filepath.Join(moduleRoot(b.t), "deploy", "local", "kafka", "log4j2.yaml")
	return exec.Command("java", append([]string{"-Xms128m", "-Xmx512m", "-XX:+UseSerialGC", "-Dlog4j2.configurationFile=" + log4j,
		"-cp", filepath.Join(b.libs, "*"), class}, args...)...)
}

// Start runs the broker (again) and waits until it answers.
func (b *Broker) Start() {
	b.t.Helper()
	log, err := os.OpenFile(filepath.Join(b.dir, "kafka.log"), os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o600)
	if err != nil {
		b.t.Fatal(err)
	}
	b.cmd = b.java("kafka.Kafka", b.props())
	b.cmd.Stdout, b.cmd.Stderr = log, log
	if err := b.cmd.Start(); err != nil {
		b.t.Fatal(err)
	}
	b.exited = make(chan struct{})
	go func(cmd *exec.Cmd, done chan struct{}) { _ = cmd.Wait(); log.Close(); close(done) }(b.cmd, b.exited)
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	// Answering metadata is not serving: after a SIGKILL the restarted node's controller keeps
	// the dead registration for the broker session timeout, and metadata still lists it. Ready is
	// when a write is acknowledged.
	for b.probe(ctx) != nil {
		select {
		case <-b.exited:
			raw, _ := os.ReadFile(filepath.Join(b.dir, "kafka.log"))
			b.t.Fatalf("the test broker exited while starting:\n%s", tail(string(raw), 3000))
		case <-ctx.Done():
			b.t.Fatal("the test broker did not answer within 90 s")
		case <-time.After(200 * time.Millisecond):
		}
	}
}

func (b *Broker) probe(ctx context.Context) error {
	if err := kafkax.Ping(ctx, b.Brokers()); err != nil {
		return err
	}
	w := &kafka.Writer{Addr: kafka.TCP(b.Brokers()...), Topic: "tally-test-probe", AllowAutoTopicCreation: true, RequiredAcks: kafka.RequireAll,
		MaxAttempts: 1, BatchTimeout: time.Millisecond, WriteTimeout: 2 * time.Second}
	defer w.Close()
	pctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	return w.WriteMessages(pctx, kafka.Message{Value: []byte("probe")})
}

// Stop ends the broker with SIGTERM (a clean shutdown) and waits for it.
func (b *Broker) Stop() { b.signal(syscall.SIGTERM) }

// Kill ends the broker with SIGKILL and waits for it.
func (b *Broker) Kill() { b.signal(syscall.SIGKILL) }

func (b *Broker) signal(sig syscall.Signal) {
	if b.cmd == nil || b.cmd.Process == nil {
		return
	}
	select {
	case <-b.exited:
		return
	default:
	}
	_ = b.cmd.Process.Signal(sig)
	select {
	case <-b.exited:
	case <-time.After(60 * time.Second):
		_ = b.cmd.Process.Kill()
		<-b.exited
	}
}

// FreeAddr is a loopback address with a port nobody listens on now.
func FreeAddr(t testing.TB) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

func freePort(t testing.TB) int {
	t.Helper()
	_, port, _ := net.SplitHostPort(FreeAddr(t))
	n, _ := strconv.Atoi(port)
	return n
}

func tail(s string, n int) string {
	if len(s) > n {
		return s[len(s)-n:]
	}
	return s
}

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
// per start. A Broker may be one node of a Cluster.
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
	b := newBroker(t)
	b.configure(1, fmt.Sprintf("1@127.0.0.1:%d", b.controllerPort), 1, 1)
	b.Start()
	return b
}

// Cluster is a Kafka cluster of the test's own: KRaft nodes that are broker and controller in
// one, a static quorum of all of them, new topics replicated to three with min.insync.replicas 2
// (the production shape `tally migrate --replication-factor 3 --min-insync-replicas 2` makes).
type Cluster struct {
	t     testing.TB
	Nodes []*Broker
}

// StartCluster starts n nodes (3 for a quorum that survives one down) and waits until each
// acknowledges a write; they are killed when the test ends.
func StartCluster(t testing.TB, n int) *Cluster {
	t.Helper()
	c := &Cluster{t: t}
	var voters []string
	for i := range n {
		b := newBroker(t)
		c.Nodes = append(c.Nodes, b)
		voters = append(voters, fmt.Sprintf("%d@127.0.0.1:%d", i+1, b.controllerPort))
	}
	rep, minISR := min(n, 3), min(n, 2)
	for i, b := range c.Nodes {
		b.configure(i+1, strings.Join(voters, ","), rep, minISR)
	}
	// No node answers before a quorum of controllers runs: launch them all, then wait.
	for _, b := range c.Nodes {
		b.launch()
	}
	for _, b := range c.Nodes {
		b.waitServing()
	}
	return c
}

// Brokers are the addresses of every node.
func (c *Cluster) Brokers() []string {
	var out []string
	for _, b := range c.Nodes {
		out = append(out, b.Brokers()...)
	}
	return out
}

// WaitInSync returns once every partition of the topics has all its replicas in sync (a node
// started again has caught up), or fails the test after timeout.
func (c *Cluster) WaitInSync(timeout time.Duration, topics ...string) {
	c.t.Helper()
	deadline := time.Now().Add(timeout)
	var last string
	for time.Now().Before(deadline) {
		if last = c.outOfSync(topics); last == "" {
			return
		}
		time.Sleep(250 * time.Millisecond)
	}
	c.t.Fatalf("replicas not back in sync after %s: %s", timeout, last)
}

// outOfSync names a partition whose in-sync replicas are fewer than its replicas ("" when none).
func (c *Cluster) outOfSync(topics []string) string {
	tr := &kafka.Transport{MetadataTTL: time.Hour} // a fresh view, not kafka-go's cached one
	defer tr.CloseIdleConnections()
	client := &kafka.Client{Addr: kafka.TCP(c.Brokers()...), Timeout: 5 * time.Second, Transport: tr}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	md, err := client.Metadata(ctx, &kafka.MetadataRequest{Topics: topics})
	if err != nil {
		return err.Error()
	}
	for _, tp := range md.Topics {
		if tp.Error != nil {
			return fmt.Sprintf("%s: %v", tp.Name, tp.Error)
		}
		for _, p := range tp.Partitions {
			if len(p.Isr) < len(p.Replicas) {
				return fmt.Sprintf("%s[%d] has %d of %d replicas in sync", tp.Name, p.ID, len(p.Isr), len(p.Replicas))
			}
		}
	}
	return ""
}

func newBroker(t testing.TB) *Broker {
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
	t.Cleanup(func() {
		b.Kill()
		if t.Failed() {
			raw, _ := os.ReadFile(filepath.Join(b.dir, "kafka.log"))
			t.Logf("the log of test broker %s, last lines:\n%s", b.Brokers()[0], tail(string(raw), 4000))
		}
	})
	return b
}

// configure writes the node's settings from the template `make up` uses and formats its storage.
func (b *Broker) configure(nodeID int, voters string, replication, minISR int) {
	b.t.Helper()
	b.configureWith(nodeID, voters, replication, minISR, func(props string) string { return props })
}

// configureWith is configure with the settings edited by edit and more arguments to the storage
// format.
func (b *Broker) configureWith(nodeID int, voters string, replication, minISR int, edit func(string) string, format ...string) {
	b.t.Helper()
	tmpl, err := os.ReadFile(filepath.Join(moduleRoot(b.t), "deploy", "local", "kafka", "server.properties.tmpl"))
	if err != nil {
		b.t.Fatal(err)
	}
	props := strings.NewReplacer("@STATE@", b.dir, "@CONTROLLER_PORT@", fmt.Sprint(b.controllerPort), "@PORT@", fmt.Sprint(b.port),
		"@NODE_ID@", fmt.Sprint(nodeID), "@VOTERS@", voters, "@REPLICATION@", fmt.Sprint(replication), "@MIN_ISR@", fmt.Sprint(minISR)).Replace(string(tmpl))
	props = edit(props)
	if err := os.WriteFile(b.props(), []byte(props), 0o600); err != nil {
		b.t.Fatal(err)
	}
	if out, err := b.java("kafka.tools.StorageTool", append([]string{"format", "-t", "MkU3OEVBNTcwNTJENDM2Qk", "-c", b.props()}, format...)...).CombinedOutput(); err != nil {
		b.t.Fatalf("format the broker's storage: %v\n%s", err, out)
	}
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
	b.launch()
	b.waitServing()
}

func (b *Broker) launch() {
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
}

func (b *Broker) waitServing() {
	b.t.Helper()
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
	if err := kafkax.Ping(ctx, kafkax.Plaintext(b.Brokers())); err != nil {
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

// SecureBroker is a test broker that also listens for SASL_SSL (SASL over TLS) as a production
// cluster does: its certificate is signed by CA, and the user SASLUser may log in with
// SASLPassword by SCRAM-SHA-256, SCRAM-SHA-512 or PLAIN. Its plaintext listener stays for the
// broker itself (and for the test to look on).
type SecureBroker struct {
	*Broker
	CA                     *CA
	SASLUser, SASLPassword string
	securePort             int
}

// StartSecureBroker starts a SecureBroker; it is killed when the test ends.
func StartSecureBroker(t testing.TB) *SecureBroker {
	t.Helper()
	b := &SecureBroker{Broker: newBroker(t), CA: NewCA(t, "kafka-test"), SASLUser: "tally", SASLPassword: "tally-secret-" + UniqueName(t, "pw"), securePort: freePort(t)}
	cert := b.CA.Issue(t, "broker", "127.0.0.1", "localhost")
	keystore := filepath.Join(b.dir, "broker-keystore.pem") // Kafka's PEM keystore: the key, then the chain
	key, _ := os.ReadFile(cert.KeyFile)
	chain, _ := os.ReadFile(cert.CertFile)
	if err := os.WriteFile(keystore, append(key, chain...), 0o600); err != nil {
		t.Fatal(err)
	}
	secure := fmt.Sprintf("SASL_SSL://127.0.0.1:%d", b.securePort)
	b.configureWith(1, fmt.Sprintf("1@127.0.0.1:%d", b.controllerPort), 1, 1, func(props string) string {
		props = strings.NewReplacer(
			fmt.Sprintf("listeners=PLAINTEXT://127.0.0.1:%d,", b.port), fmt.Sprintf("listeners=PLAINTEXT://127.0.0.1:%d,%s,", b.port, secure),
			fmt.Sprintf("advertised.listeners=PLAINTEXT://127.0.0.1:%d\n", b.port), fmt.Sprintf("advertised.listeners=PLAINTEXT://127.0.0.1:%d,%s\n", b.port, secure),
			"listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT\n", "listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT,SASL_SSL:SASL_SSL\n",
		).Replace(props)
		return props + strings.Join([]string{
			"sasl.enabled.mechanisms=SCRAM-SHA-256,SCRAM-SHA-512,PLAIN",
			"listener.name.sasl_ssl.scram-sha-256.sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required;",
			"listener.name.sasl_ssl.scram-sha-512.sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required;",
			fmt.Sprintf(`listener.name.sasl_ssl.plain.sasl.jaas.config=org.apache.kafka.common.security.plain.PlainLoginModule required user_%s="%s";`, b.SASLUser, b.SASLPassword),
			"ssl.keystore.type=PEM",
			"ssl.keystore.location=" + keystore,
		}, "\n") + "\n"
	}, "--add-scram", fmt.Sprintf("SCRAM-SHA-256=[name=%s,password=%s]", b.SASLUser, b.SASLPassword),
		"--add-scram", fmt.Sprintf("SCRAM-SHA-512=[name=%s,password=%s]", b.SASLUser, b.SASLPassword))
	b.Start()
	return b
}

// SecureBrokers are the addresses of the SASL_SSL listener.
func (b *SecureBroker) SecureBrokers() []string {
	return []string{fmt.Sprintf("127.0.0.1:%d", b.securePort)}
}

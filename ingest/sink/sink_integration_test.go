package sink_test

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2"
	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/segmentio/kafka-go"

	chschema "github.com/tally-billing/tally/deploy/clickhouse"
	"github.com/tally-billing/tally/ingest/sink"
	"github.com/tally-billing/tally/internal/chx"
	"github.com/tally-billing/tally/internal/testinfra"
	"github.com/tally-billing/tally/settle"
)

type env struct {
	brokers         []string
	topic, dlq, grp string
	conn            driver.Conn
	cfg             chx.Config
	partitions      int
}

func setup(t testing.TB, partitions int) *env { return setupWith(t, partitions, nil) }

// setupWith is setup with the usage topic's configs.
func setupWith(t testing.TB, partitions int, configs map[string]string) *env {
	t.Helper()
	brokers, topic := testinfra.Topic(t, partitions, configs)
	_, dlq := testinfra.Topic(t, 1, nil)
	// Over HTTP, as the roles talk to ClickHouse: the local chDB engine aborts when a native
	// client dies mid-query, which stopping an in-process worker can do.
	conn, cfg := testinfra.ClickHouse(t, clickhouse.HTTP)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if _, err := chx.Migrate(ctx, cfg, chschema.Migrations, slog.New(slog.NewTextHandler(io.Discard, nil))); err != nil {
		t.Fatal(err)
	}
	return &env{brokers: brokers, topic: topic, dlq: dlq, grp: testinfra.UniqueName(t, "sink"), conn: conn, cfg: cfg, partitions: partitions}
}

func usage(id, account, service string, calls int, at string) []byte {
	return fmt.Appendf(nil, `{"specversion":"1.0","id":%q,"source":"gw","type":"tally.usage.v1","time":%q,"data":{"account":%q,"service":%q,"calls":%d}}`,
		id, at, account, service, calls)
}

func produce(t *testing.T, e *env, msgs []kafka.Message) { produceB(t, e, msgs) }

func produceB(t testing.TB, e *env, msgs []kafka.Message) {
	testinfra.Produce(t, e.brokers, e.topic, msgs)
}

// waitForProgress waits until the sink recorded progress to the end of every partition.
func waitForProgress(t testing.TB, e *env, timeout time.Duration) {
	t.Helper()
	testinfra.WaitForOffsets(t, e.conn, testinfra.EndOffsets(t, e.brokers, e.topic, e.partitions), timeout,
		"SELECT kafka_partition, max(next_offset) FROM sink_progress WHERE consumer = ? GROUP BY kafka_partition", e.grp)
}

func count(t *testing.T, e *env, q string, args ...any) uint64 {
	t.Helper()
	var n uint64
	if err := e.conn.QueryRow(context.Background(), q, args...).Scan(&n); err != nil {
		t.Fatalf("%s: %v", q, err)
	}
	return n
}

func runSink(t *testing.T, e *env, ctx context.Context) chan error {
	return runSinkWith(t, e, ctx, 100, 200*time.Millisecond)
}

func runSinkWith(t testing.TB, e *env, ctx context.Context, batchRows int, flush time.Duration) chan error {
	t.Helper()
	loc, _ := time.LoadLocation("Asia/Shanghai")
	s, err := sink.New(sink.Config{Brokers: e.brokers, Topic: e.topic, DLQTopic: e.dlq, Group: e.grp, BatchRows: batchRows,
		FlushInterval: flush, SessionTimeout: 6 * time.Second, Location: loc, Services: settle.DefaultCatalogue()},
		e.conn, slog.New(slog.NewTextHandler(io.Discard, nil)), sink.NewMetrics(prometheus.NewRegistry()))
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()
	return done
}

// Valid rows land once each, a duplicate far apart in the log is one row after FINAL, bad records
// go to the dead-letter topic with their reason and original bytes, and nothing else is affected.
func TestSinkWritesRowsOnceAndDeadLetters(t *testing.T) {
	e := setup(t, 2)
	var msgs []kafka.Message
	for i := range 1000 {
		acct := fmt.Sprintf("acct-%d", i%7)
		msgs = append(msgs, kafka.Message{Key: []byte(acct), Value: usage(fmt.Sprintf("e%d", i), acct, "image-tagging", 1+i%5, "2026-10-05T10:00:00+08:00")})
		if i == 10 {
			msgs = append(msgs, kafka.Message{Key: []byte("acct-3"), Value: []byte("garbage \x00 bytes")})
			msgs = append(msgs, kafka.Message{Key: []byte("acct-3"), Value: usage("bad-svc", "acct-3", "no-such", 1, "2026-10-05T10:00:00+08:00")})
		}
	}
	// The same event id again, far apart (after ~1000 others), with other content: the first counts.
	msgs = append(msgs, kafka.Message{Key: []byte("acct-3"), Value: usage("e3", "acct-3", "image-tagging", 99, "2026-10-05T10:00:00+08:00")})
	// The same id in another month is another identity.
	msgs = append(msgs, kafka.Message{Key: []byte("acct-3"), Value: usage("e3", "acct-3", "image-tagging", 5, "2026-11-05T10:00:00+08:00")})
	produce(t, e, msgs)

	ctx, cancel := context.WithCancel(context.Background())
	done := runSink(t, e, ctx)
	waitForProgress(t, e, time.Minute)
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if n := count(t, e, "SELECT count() FROM usage_events FINAL"); n != 1001 {
		t.Fatalf("rows after FINAL: %d, want 1001", n)
	}
	if n := count(t, e, "SELECT sum(calls) FROM usage_events FINAL WHERE id = 'e3' AND period = 202610"); n != 4 {
		t.Fatalf("calls of e3 in October: %d; want the first copy's 4", n)
	}
	if n := count(t, e, "SELECT count() FROM usage_events FINAL WHERE id = 'e3'"); n != 2 {
		t.Fatalf("e3 rows: %d; want one per month", n)
	}

	r := kafka.NewReader(kafka.ReaderConfig{Brokers: e.brokers, Topic: e.dlq, Partition: 0, MaxWait: 100 * time.Millisecond})
	defer r.Close()
	rctx, rcancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer rcancel()
	var reasons []string
	for range 2 {
		m, err := r.ReadMessage(rctx)
		if err != nil {
			t.Fatalf("dead letters: %v (got %v)", err, reasons)
		}
		h := map[string]string{}
		for _, x := range m.Headers {
			h[x.Key] = string(x.Value)
		}
		if h[sink.HeaderTopic] != e.topic || h[sink.HeaderOffset] == "" || string(m.Key) != "acct-3" {
			t.Fatalf("dead letter headers %v key %q", h, m.Key)
		}
		reasons = append(reasons, h[sink.HeaderReason]+" | "+string(m.Value))
	}
	all := strings.Join(reasons, "\n")
	if !strings.Contains(all, "not a JSON CloudEvent") || !strings.Contains(all, "| garbage \x00 bytes") || !strings.Contains(all, `unknown service "no-such"`) {
		t.Fatalf("dead letters:\n%s", all)
	}
}

// The sink killed with SIGKILL in the middle of batches, again and again, then restarted: the
// table holds exactly the events produced, none missing, none twice.
func TestSinkSurvivesSIGKILL(t *testing.T) {
	if testing.Short() {
		t.Skip("kills processes for a minute")
	}
	e := setup(t, 3)
	bin := testinfra.BuildTally(t, "../..")
	start := func() *exec.Cmd {
		cmd := exec.Command(bin, "sink", "--kafka-brokers", strings.Join(e.brokers, ","), "--topic-usage", e.topic, "--topic-usage-dlq", e.dlq,
			"--group", e.grp, "--clickhouse-protocol", "http", "--clickhouse-http", "http://"+testinfra.ClickHouseHTTPAddr(), "--clickhouse-database", e.cfg.Database,
			"--batch-rows", "300", "--flush-interval", "100ms", "--session-timeout", "6s", "--admin-addr", "127.0.0.1:0", "--log-level", "warn")
		cmd.Stderr = os.Stderr
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		return cmd
	}
	const total = 30_000
	var wantCalls uint64
	var msgs []kafka.Message
	r := rand.New(rand.NewPCG(42, 42))
	for i := range total {
		acct := fmt.Sprintf("acct-%d", r.IntN(50))
		calls := 1 + r.IntN(9)
		wantCalls += uint64(calls)
		m := kafka.Message{Key: []byte(acct), Value: usage(fmt.Sprintf("k%d", i), acct, "vehicle-recognition", calls, "2026-10-05T10:00:00+08:00")}
		msgs = append(msgs, m)
		if r.IntN(20) == 0 {
			msgs = append(msgs, m) // a producer retry
		}
	}
	producing := make(chan struct{})
	go func() {
		defer close(producing)
		for i := 0; i < len(msgs); i += 3000 {
			produce(t, e, msgs[i:min(i+3000, len(msgs))])
			time.Sleep(300 * time.Millisecond)
		}
	}()
	// Each round: start, wait until this process has written at least one batch (so it owns
	// partitions and is mid-stream), then kill it at a random instant.
	kills := 0
	for ; kills < 6; kills++ {
		before := count(t, e, "SELECT count() FROM sink_progress")
		cmd := start()
		deadline := time.Now().Add(45 * time.Second)
		for count(t, e, "SELECT count() FROM sink_progress") == before && time.Now().Before(deadline) {
			time.Sleep(20 * time.Millisecond)
		}
		time.Sleep(time.Duration(r.IntN(400)) * time.Millisecond)
		_ = cmd.Process.Signal(syscall.SIGKILL)
		_ = cmd.Wait()
	}
	<-producing
	cmd := start()
	defer func() { _ = cmd.Process.Signal(syscall.SIGTERM); _ = cmd.Wait() }()
	waitForProgress(t, e, 3*time.Minute)

	if n := count(t, e, "SELECT count() FROM usage_events FINAL"); n != total {
		t.Fatalf("after %d kills: %d rows after FINAL, want %d", kills, n, total)
	}
	if n := count(t, e, "SELECT sum(calls) FROM usage_events FINAL"); n != wantCalls {
		t.Fatalf("after %d kills: %d calls, want %d", kills, n, wantCalls)
	}
	raw := count(t, e, "SELECT count() FROM usage_events")
	t.Logf("%d kills; %d rows raw, %d after FINAL (%d producer retries)", kills, raw, total, len(msgs)-total)
}

package worker_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2"
	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/segmentio/kafka-go"

	"github.com/tally-billing/tally/aggregate/worker"
	"github.com/tally-billing/tally/contract"
	chschema "github.com/tally-billing/tally/deploy/clickhouse"
	"github.com/tally-billing/tally/ingest/sink"
	"github.com/tally-billing/tally/internal/chx"
	"github.com/tally-billing/tally/internal/kafkax"
	"github.com/tally-billing/tally/internal/testinfra"
	"github.com/tally-billing/tally/settle"
)

var shanghai, _ = time.LoadLocation("Asia/Shanghai")

type env struct {
	brokers    []string
	topic      string
	partitions int
	conn       driver.Conn
	cfg        chx.Config
	group      string
}

func setup(t *testing.T, partitions int) *env {
	t.Helper()
	brokers, topic := testinfra.Topic(t, partitions, nil)
	// Over HTTP, as the roles talk to ClickHouse: the local chDB engine aborts when a native
	// client dies mid-query, which stopping an in-process worker can do.
	conn, cfg := testinfra.ClickHouse(t, clickhouse.HTTP)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if _, err := chx.Migrate(ctx, cfg, chschema.Migrations, slog.New(slog.NewTextHandler(io.Discard, nil))); err != nil {
		t.Fatal(err)
	}
	return &env{brokers: brokers, topic: topic, partitions: partitions, conn: conn, cfg: cfg, group: testinfra.UniqueName(t, "agg")}
}

// workload is usage over two months with gateway retries 20–400 records behind the original
// (within a dedup window of 1000, and often across a checkpoint), and the exact totals.
func workload(n int, seed uint64) ([]kafka.Message, map[string]int64) {
	r := rand.New(rand.NewPCG(seed, seed))
	var msgs []kafka.Message
	want := map[string]int64{}
	retries := map[int][]kafka.Message{}
	for i := range n {
		msgs = append(msgs, retries[i]...)
		delete(retries, i)
		acct := fmt.Sprintf("acct-%d", r.IntN(40))
		svc := []string{"image-tagging", "vehicle-recognition", "smart-cropping"}[r.IntN(3)]
		month := 10 + r.IntN(2)
		calls := 1 + r.IntN(20)
		raw := contract.MustEncode(contract.Event{ID: fmt.Sprintf("w%d", i), Source: "gw", Type: contract.UsageType,
			Time: time.Date(2026, time.Month(month), 10+r.IntN(9), 10, 0, 0, 0, shanghai), Data: contract.UsageData{Account: acct, Service: svc, Calls: int64(calls)}})
		msgs = append(msgs, kafka.Message{Key: []byte(acct), Value: raw})
		if r.IntN(10) == 0 {
			at := i + 20 + r.IntN(380)
			retries[at] = append(retries[at], kafka.Message{Key: []byte(acct), Value: raw})
		}
		want[fmt.Sprintf("%s|%s|2026-%02d", acct, svc, month)] += int64(calls)
	}
	for _, late := range retries {
		msgs = append(msgs, late...)
	}
	return msgs, want
}

func startSink(t *testing.T, e *env, ctx context.Context) {
	t.Helper()
	_, dlq := testinfra.Topic(t, 1, nil)
	s, err := sink.New(sink.Config{Brokers: e.brokers, Topic: e.topic, DLQTopic: dlq, Group: e.group + "-sink", BatchRows: 2000,
		FlushInterval: 100 * time.Millisecond, SessionTimeout: 6 * time.Second, Location: shanghai, Services: settle.DefaultCatalogue()},
		e.conn, slog.New(slog.NewTextHandler(io.Discard, nil)), sink.NewMetrics(prometheus.NewRegistry()))
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = s.Run(ctx) }()
}

func waitCaughtUp(t *testing.T, e *env) {
	t.Helper()
	end := testinfra.EndOffsets(t, e.brokers, e.topic, e.partitions)
	testinfra.WaitForOffsets(t, e.conn, end, 3*time.Minute,
		"SELECT kafka_partition, max(next_offset) FROM aggregate_checkpoints WHERE consumer = ? GROUP BY kafka_partition", e.group)
	testinfra.WaitForOffsets(t, e.conn, end, 3*time.Minute,
		"SELECT kafka_partition, max(next_offset) FROM sink_progress WHERE consumer = ? GROUP BY kafka_partition", e.group+"-sink")
}

func checkExact(t *testing.T, e *env, want map[string]int64) {
	t.Helper()
	ctx := context.Background()
	for _, p := range []contract.Period{{Year: 2026, Month: 10}, {Year: 2026, Month: 11}} {
		diffs, err := worker.Reconcile(ctx, e.conn, e.group, e.topic, p)
		if err != nil {
			t.Fatal(err)
		}
		if len(diffs) != 0 {
			t.Fatalf("%s: running totals differ from the exact recount: %+v", p, diffs)
		}
	}
	// And the recount itself is what was produced.
	rows, err := e.conn.Query(ctx, "SELECT account, service, period, toInt64(sum(calls)) FROM usage_events FINAL GROUP BY account, service, period")
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	got := map[string]int64{}
	for rows.Next() {
		var a, s string
		var per uint32
		var n int64
		if err := rows.Scan(&a, &s, &per, &n); err != nil {
			t.Fatal(err)
		}
		got[fmt.Sprintf("%s|%s|%d-%02d", a, s, per/100, per%100)] = n
	}
	if len(got) != len(want) {
		t.Fatalf("%d totals, want %d", len(got), len(want))
	}
	for k, v := range want {
		if got[k] != v {
			t.Fatalf("%s = %d, want %d", k, got[k], v)
		}
	}
}

// The aggregator killed with SIGKILL at random moments, many times: after it catches up, every
// running total equals the exact recount.
func TestAggregateSurvivesSIGKILL(t *testing.T) {
	if testing.Short() {
		t.Skip("kills processes for a minute")
	}
	e := setup(t, 3)
	msgs, want := workload(20_000, 7)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	startSink(t, e, ctx)
	bin := testinfra.BuildTally(t, "../..")
	start := func() *exec.Cmd {
		cmd := exec.Command(bin, "aggregate", "--kafka-brokers", strings.Join(e.brokers, ","), "--topic-usage", e.topic, "--topic-usage-totals", "",
			"--topic-accounts", e.topic, "--group", e.group, "--clickhouse-http", "http://"+testinfra.ClickHouseHTTPAddr(), "--clickhouse-database", e.cfg.Database,
			"--dedup-window", "1000", "--checkpoint-interval", "100ms", "--session-timeout", "6s", "--api-addr", "", "--admin-addr", "127.0.0.1:0", "--log-level", "warn")
		cmd.Stderr = os.Stderr
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		return cmd
	}
	r := rand.New(rand.NewPCG(3, 3))
	const rounds = 6
	chunk := len(msgs)/(rounds+1) + 1
	count := func() uint64 {
		var n uint64
		_ = e.conn.QueryRow(context.Background(), "SELECT count() FROM aggregate_checkpoints WHERE consumer = ?", e.group).Scan(&n)
		return n
	}
	// Each round: new records, a fresh process that has checkpointed at least once (so it owns
	// partitions and is mid-stream), then SIGKILL at a random instant.
	kills := 0
	for ; kills < rounds; kills++ {
		part := msgs[kills*chunk : min((kills+1)*chunk, len(msgs))]
		before := count()
		cmd := start()
		produced := make(chan struct{})
		go func() { // keep records arriving while the process folds, so the kill lands mid-stream
			defer close(produced)
			for i := 0; i < len(part); i += len(part)/10 + 1 {
				testinfra.Produce(t, e.brokers, e.topic, part[i:min(i+len(part)/10+1, len(part))])
				time.Sleep(100 * time.Millisecond)
			}
		}()
		deadline := time.Now().Add(45 * time.Second)
		for count() == before && time.Now().Before(deadline) {
			time.Sleep(20 * time.Millisecond)
		}
		time.Sleep(time.Duration(r.IntN(500)) * time.Millisecond)
		_ = cmd.Process.Signal(syscall.SIGKILL)
		_ = cmd.Wait()
		<-produced
	}
	testinfra.Produce(t, e.brokers, e.topic, msgs[min(rounds*chunk, len(msgs)):])
	cmd := start()
	defer func() { _ = cmd.Process.Signal(syscall.SIGTERM); _ = cmd.Wait() }()
	waitCaughtUp(t, e)
	checkExact(t, e, want)
	var rows uint64
	_ = e.conn.QueryRow(context.Background(), "SELECT count() FROM aggregate_totals WHERE consumer = ?", e.group).Scan(&rows)
	t.Logf("%d kills, %d records, %d totals exact, %d total rows kept", kills, len(msgs), len(want), rows)
}

// Two aggregators in one group, one stopped mid-run: the other takes over its partitions from
// their checkpoints and the totals stay exact.
func TestTwoAggregatorsOneStopped(t *testing.T) {
	e := setup(t, 4)
	msgs, want := workload(12_000, 11)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	startSink(t, e, ctx)
	var metrics *worker.Metrics
	newWorker := func() *worker.Worker {
		metrics = worker.NewMetrics(prometheus.NewRegistry())
		w, err := worker.New(worker.Config{Brokers: e.brokers, Topic: e.topic, Group: e.group, Window: 1000, CheckpointInterval: 100 * time.Millisecond,
			SessionTimeout: 6 * time.Second, Location: shanghai, Services: settle.DefaultCatalogue()},
			e.conn, slog.New(slog.NewTextHandler(io.Discard, nil)), metrics)
		if err != nil {
			t.Fatal(err)
		}
		return w
	}
	ctxA, stopA := context.WithCancel(ctx)
	doneA := make(chan error, 1)
	stopped := newWorker() // both built here, before either runs: newWorker sets metrics
	survivor := newWorker()
	survivorMetrics := metrics
	go func() { doneA <- stopped.Run(ctxA) }()
	go func() { _ = survivor.Run(ctx) }()
	testinfra.Produce(t, e.brokers, e.topic, msgs[:len(msgs)/2])
	time.Sleep(3 * time.Second)
	stopA()
	if err := <-doneA; err != nil {
		t.Fatal(err)
	}
	testinfra.Produce(t, e.brokers, e.topic, msgs[len(msgs)/2:])
	waitCaughtUp(t, e)
	checkExact(t, e, want)

	// The periodic reconciliation says so as a metric, and notices a difference.
	go func() {
		_ = survivor.ReconcileEvery(ctx, 100*time.Millisecond, func() time.Time { return at("2026-11-15T00:00:00+08:00") })
	}()
	gauge := func(p string) float64 { return testutil.ToFloat64(survivorMetrics.Differences.WithLabelValues(p)) }
	time.Sleep(time.Second)
	if gauge("2026-10") != 0 || gauge("2026-11") != 0 {
		t.Fatalf("differences %v %v, want 0", gauge("2026-10"), gauge("2026-11"))
	}
	if err := e.conn.Exec(context.Background(), `INSERT INTO usage_events (account, service, period, id, event_time, calls, received_at, kafka_topic, kafka_partition, kafka_offset)
		VALUES ('acct-0', 'image-tagging', 202610, 'not-folded', now64(9), 5, now64(3), 'elsewhere', 0, 0)`); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for gauge("2026-10") != 1 && time.Now().Before(deadline) {
		time.Sleep(100 * time.Millisecond)
	}
	if gauge("2026-10") != 1 {
		t.Fatalf("a row the aggregator never folded: differences %v, want 1", gauge("2026-10"))
	}
}

func at(s string) time.Time { t, _ := time.Parse(time.RFC3339, s); return t }

// Checkpoints write the totals that changed; every so often one writes them all and the rows it
// supersedes go, so aggregate_totals stays a few times the number of keys however long it runs.
func TestCheckpointsKeepTheTotalsTableBounded(t *testing.T) {
	e := setup(t, 1)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	startSink(t, e, ctx)
	metrics := worker.NewMetrics(prometheus.NewRegistry())
	w, err := worker.New(worker.Config{Brokers: e.brokers, Topic: e.topic, Group: e.group, Window: 1000, CheckpointInterval: 50 * time.Millisecond,
		SessionTimeout: 6 * time.Second, Location: shanghai, Services: settle.DefaultCatalogue()},
		e.conn, slog.New(slog.NewTextHandler(io.Discard, nil)), metrics)
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = w.Run(ctx) }()
	const keys, waves = 10, 25
	want := map[string]int64{}
	for wave := range waves {
		var msgs []kafka.Message
		for k := range keys {
			acct := fmt.Sprintf("acct-%d", k)
			raw := contract.MustEncode(contract.Event{ID: fmt.Sprintf("w%d-%d", wave, k), Source: "gw", Type: contract.UsageType,
				Time: at("2026-10-15T10:00:00+08:00"), Data: contract.UsageData{Account: acct, Service: "image-tagging", Calls: int64(wave + 1)}})
			msgs = append(msgs, kafka.Message{Key: []byte(acct), Value: raw})
			want[acct+"|image-tagging|2026-10"] += int64(wave + 1)
		}
		testinfra.Produce(t, e.brokers, e.topic, msgs)
		waitCaughtUp(t, e) // one checkpoint per wave, each changing every key
	}
	checkExact(t, e, want)
	var rows uint64
	if err := e.conn.QueryRow(ctx, "SELECT count() FROM aggregate_totals WHERE consumer = ?", e.group).Scan(&rows); err != nil {
		t.Fatal(err)
	}
	// Without full checkpoints: waves × keys = 250 rows. With them (every 5th checkpoint), at most
	// the previous full one, four partial ones, the last full one and four more: 100.
	if rows > 100 || testutil.ToFloat64(metrics.FullCheckpoints) < 4 {
		t.Fatalf("%d total rows for %d keys after %d checkpoints, %v full ones", rows, keys, waves, testutil.ToFloat64(metrics.FullCheckpoints))
	}
	t.Logf("%d total rows for %d keys after %d checkpoints, %v full ones", rows, keys, waves, testutil.ToFloat64(metrics.FullCheckpoints))
}

// Records that change no total (retries, invalid records, closed months) still move the
// checkpoint: the committed offset reaches the end of the partition.
func TestCheckpointsFollowRecordsThatChangeNothing(t *testing.T) {
	e := setup(t, 1)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	valid := `{"specversion":"1.0","id":"v1","source":"gw","type":"tally.usage.v1","time":"2026-10-15T10:00:00+08:00","data":{"account":"acme","service":"image-tagging","calls":3}}`
	testinfra.Produce(t, e.brokers, e.topic, []kafka.Message{{Key: []byte("acme"), Value: []byte(valid)}})
	w, err := worker.New(worker.Config{Brokers: e.brokers, Topic: e.topic, Group: e.group, Window: 100, CheckpointInterval: 50 * time.Millisecond,
		SessionTimeout: 6 * time.Second, Location: shanghai, Services: settle.DefaultCatalogue()},
		e.conn, slog.New(slog.NewTextHandler(io.Discard, nil)), worker.NewMetrics(prometheus.NewRegistry()))
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = w.Run(ctx) }()
	committed := "SELECT kafka_partition, max(next_offset) FROM aggregate_checkpoints WHERE consumer = ? GROUP BY kafka_partition"
	testinfra.WaitForOffsets(t, e.conn, testinfra.EndOffsets(t, e.brokers, e.topic, 1), 30*time.Second, committed, e.group)
	var tail []kafka.Message
	for range 5 {
		tail = append(tail, kafka.Message{Key: []byte("acme"), Value: []byte(valid)}) // retries
		tail = append(tail, kafka.Message{Key: []byte("acme"), Value: []byte("not an event")})
	}
	testinfra.Produce(t, e.brokers, e.topic, tail)
	testinfra.WaitForOffsets(t, e.conn, testinfra.EndOffsets(t, e.brokers, e.topic, 1), 30*time.Second, committed, e.group)
}

// Records Kafka deleted before the aggregator read them are counted and reported, never skipped
// in silence: the partition goes on (running totals are advisory), the metric says how many.
func TestAggregateReportsRecordsDeletedBeforeItReadThem(t *testing.T) {
	e := setup(t, 1)
	record := func(i int) kafka.Message {
		return kafka.Message{Key: []byte("acme"), Value: contract.MustEncode(contract.Event{ID: fmt.Sprintf("d%d", i), Source: "gw", Type: contract.UsageType,
			Time: at("2026-10-15T10:00:00+08:00"), Data: contract.UsageData{Account: "acme", Service: "image-tagging", Calls: 1}})}
	}
	run := func(ctx context.Context) (*worker.Worker, *worker.Metrics, chan error) {
		m := worker.NewMetrics(prometheus.NewRegistry())
		w, err := worker.New(worker.Config{Brokers: e.brokers, Topic: e.topic, Group: e.group, Window: 3, CheckpointInterval: 50 * time.Millisecond,
			SessionTimeout: 6 * time.Second, Location: shanghai, Services: settle.DefaultCatalogue()},
			e.conn, slog.New(slog.NewTextHandler(io.Discard, nil)), m)
		if err != nil {
			t.Fatal(err)
		}
		done := make(chan error, 1)
		go func() { done <- w.Run(ctx) }()
		return w, m, done
	}
	committed := "SELECT kafka_partition, max(next_offset) FROM aggregate_checkpoints WHERE consumer = ? GROUP BY kafka_partition"
	var first []kafka.Message
	for i := range 10 {
		first = append(first, record(i))
	}
	testinfra.Produce(t, e.brokers, e.topic, first)
	ctx, cancel := context.WithCancel(context.Background())
	_, _, done := run(ctx)
	testinfra.WaitForOffsets(t, e.conn, testinfra.EndOffsets(t, e.brokers, e.topic, 1), 30*time.Second, committed, e.group)
	cancel()
	<-done

	var more []kafka.Message
	for i := 10; i < 20; i++ {
		more = append(more, record(i))
	}
	testinfra.Produce(t, e.brokers, e.topic, more)
	testinfra.KafkaDeleteRecords(t, e.brokers, e.topic, 0, 15) // 10..14 are gone unread; 7..9 (the window) too
	ctx, cancel = context.WithCancel(context.Background())
	defer cancel()
	w, m, done := run(ctx)
	testinfra.WaitForOffsets(t, e.conn, testinfra.EndOffsets(t, e.brokers, e.topic, 1), 30*time.Second, committed, e.group)
	if v := testutil.ToFloat64(m.Lost.WithLabelValues("0", "fold")); v != 5 {
		t.Errorf("records lost to the fold: %v; want 5", v)
	}
	if v := testutil.ToFloat64(m.Lost.WithLabelValues("0", "window")); v != 3 {
		t.Errorf("records lost to the dedup window: %v; want 3", v)
	}
	totals, ok, _ := w.AccountUsage("acme", contract.Period{Year: 2026, Month: 10})
	if !ok || totals["image-tagging"] != 15 {
		t.Errorf("running total %v (ok %v); want the 10 read before and the 5 after the hole", totals, ok)
	}
	cancel()
	<-done
}

// A producer that does not partition by murmur2 of the account (librdkafka's or sarama's
// default) puts one account on two partitions, here with a retry of one of its events on the
// other partition than the original. The aggregator says so (metric, misrouted_usage), the usage
// API answers that account-month exactly (the recount: the retry counted once), its partial
// totals stay off the totals topic, and an account produced the usual way keeps its running
// total.
func TestMisroutedUsageIsAnsweredExactly(t *testing.T) {
	e := setup(t, 2)
	_, totalsTopic := testinfra.Topic(t, 1, map[string]string{"cleanup.policy": "compact"})
	_, accountsTopic := testinfra.Topic(t, 1, nil)
	home := (&kafka.Murmur2Balancer{}).Balance(kafka.Message{Key: []byte("acct-x")}, 0, 1)
	on := func(partition int, id, account string, calls int64) kafka.Message {
		raw := contract.MustEncode(contract.Event{ID: id, Source: "gw", Type: contract.UsageType, Time: at("2026-10-12T10:00:00+08:00"),
			Data: contract.UsageData{Account: account, Service: "image-tagging", Calls: calls}})
		return kafka.Message{Key: []byte(account), Value: raw, Headers: []kafka.Header{{Key: "partition", Value: []byte(strconv.Itoa(partition))}}}
	}
	yHome := (&kafka.Murmur2Balancer{}).Balance(kafka.Message{Key: []byte("acct-y")}, 0, 1)
	msgs := []kafka.Message{on(home, "x1", "acct-x", 5), on(1-home, "x1", "acct-x", 5), on(1-home, "x2", "acct-x", 7), on(yHome, "y1", "acct-y", 3)}
	w := &kafka.Writer{Addr: kafka.TCP(e.brokers...), Topic: e.topic, RequiredAcks: kafka.RequireAll, BatchTimeout: time.Millisecond,
		Balancer: kafka.BalancerFunc(func(m kafka.Message, _ ...int) int { p, _ := strconv.Atoi(string(m.Headers[0].Value)); return p })}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	if err := w.WriteMessages(ctx, msgs...); err != nil {
		t.Fatal(err)
	}
	_ = w.Close()

	startSink(t, e, ctx)
	reg := prometheus.NewRegistry()
	agg, err := worker.New(worker.Config{Brokers: e.brokers, Topic: e.topic, TotalsTopic: totalsTopic, Group: e.group, Window: 1000, CheckpointInterval: 100 * time.Millisecond,
		SessionTimeout: 6 * time.Second, Location: shanghai, Services: settle.DefaultCatalogue()}, e.conn, slog.New(slog.NewTextHandler(io.Discard, nil)), worker.NewMetrics(reg))
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = agg.Run(ctx) }()
	accounts := worker.NewAccounts(kafkax.Plaintext(e.brokers), accountsTopic, settle.DefaultCatalogue(), slog.New(slog.NewTextHandler(io.Discard, nil)))
	go func() { _ = accounts.Run(ctx) }()
	waitCaughtUp(t, e)
	oct := contract.Period{Year: 2026, Month: 10}
	for deadline := time.Now().Add(30 * time.Second); !agg.Misrouted("acct-x", oct); time.Sleep(100 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("acct-x was never found misrouted")
		}
	}
	api := (&worker.API{Worker: agg, Accounts: accounts, Usage: e.conn, Now: func() time.Time { return at("2026-10-26T09:00:00+08:00") },
		Billing: settle.Config{Catalogue: settle.DefaultCatalogue(), Location: shanghai}}).Handler()
	calls := func(account string) int64 {
		t.Helper()
		for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(100 * time.Millisecond) {
			rec := httptest.NewRecorder()
			api.ServeHTTP(rec, loopbackGet("/v1/accounts/"+account+"/usage?period=2026-10"))
			var u worker.UsageResponse
			_ = json.Unmarshal(rec.Body.Bytes(), &u)
			if rec.Code == http.StatusOK && len(u.Services) == 1 {
				return u.Services[0].Calls
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s: %d %s", account, rec.Code, rec.Body)
			}
		}
	}
	if got := calls("acct-x"); got != 12 {
		t.Fatalf("acct-x: %d calls; want 12 (5 + 7, the retry on the other partition counted once)", got)
	}
	if got := calls("acct-y"); got != 3 || agg.Misrouted("acct-y", oct) {
		t.Fatalf("acct-y, produced as ingest does: %d calls", got)
	}
	if got := testinfra.Samples(t, reg)[fmt.Sprintf("tally_aggregate_misrouted_records_total{partition=%d}", 1-home)]; got != 2 {
		t.Fatalf("misrouted records counted: %v", testinfra.Samples(t, reg))
	}
	// Shared with the other aggregators through ClickHouse within a few seconds.
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(200 * time.Millisecond) {
		var rows uint64
		err := e.conn.QueryRow(ctx, "SELECT count() FROM misrouted_usage FINAL WHERE account = 'acct-x' AND period = 202610").Scan(&rows)
		if err == nil && rows == 1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("misrouted_usage rows for acct-x: %d %v", rows, err)
		}
	}
	// The totals topic: acct-y's total, none of acct-x's partial ones.
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(200 * time.Millisecond) {
		keys := map[string]bool{}
		if err := kafkax.ReadAll(ctx, kafkax.Plaintext(e.brokers), totalsTopic, func(m kafka.Message) error { keys[string(m.Key)] = true; return nil }); err != nil {
			t.Fatal(err)
		}
		if keys["acct-y|image-tagging|2026-10"] {
			for k := range keys {
				if strings.HasPrefix(k, "acct-x|") {
					t.Fatalf("a partial total of acct-x was published: %s", k)
				}
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("acct-y's total never reached the totals topic: %v", keys)
		}
	}
}

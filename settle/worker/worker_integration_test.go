package worker_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2"
	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/segmentio/kafka-go"
	"github.com/shopspring/decimal"

	"github.com/tally-billing/tally/contract"
	chschema "github.com/tally-billing/tally/deploy/clickhouse"
	"github.com/tally-billing/tally/ingest/sink"
	"github.com/tally-billing/tally/internal/chx"
	"github.com/tally-billing/tally/internal/kafkax"
	"github.com/tally-billing/tally/internal/testinfra"
	"github.com/tally-billing/tally/settle"
	"github.com/tally-billing/tally/settle/worker"
)

var shanghai, _ = time.LoadLocation("Asia/Shanghai")

// clock is the virtual clock every part of the test shares.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) Now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *clock) Set(s string)   { c.mu.Lock(); defer c.mu.Unlock(); c.t = at(s) }
func at(s string) time.Time     { t, _ := time.Parse(time.RFC3339, s); return t }
func discard() *slog.Logger {
	if os.Getenv("TALLY_TEST_LOG") != "" {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.NewTextHandler(io.Discard, nil))
}
func billingConfig() settle.Config {
	return settle.Config{Catalogue: settle.DefaultCatalogue(), Location: shanghai, HoldRatio: decimal.NewFromInt(1)}
}

type env struct {
	brokers                                                []string
	usage, accounts, ledger, billing, status, journal, dlq string
	conn                                                   driver.Conn
	db                                                     string
	sinkGroup                                              string
	chHTTP                                                 string // the ClickHouse HTTP URL roles get
	clock                                                  *clock
}

func setup(t *testing.T) *env { return setupOn(t, nil, nil) }

// setupOn is setup with the topics on brokers (nil: the shared test broker, each topic removed
// afterwards; otherwise a broker of the test's own, which goes with it) and the database on
// server (nil: the shared ClickHouse).
func setupOn(t *testing.T, brokers []string, server *testinfra.ClickHouseServer) *env {
	t.Helper()
	e := &env{clock: &clock{}}
	topic := func(partitions int, configs map[string]string) string {
		if brokers == nil {
			b, name := testinfra.Topic(t, partitions, configs)
			e.brokers = b
			return name
		}
		e.brokers = brokers
		name := testinfra.UniqueName(t, "t")
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		spec := kafkax.TopicSpec{Name: name, Partitions: partitions, Configs: testinfra.TopicConfigs(configs)}
		if len(brokers) >= 3 { // a cluster: replicated as in production
			spec.ReplicationFactor, spec.Configs["min.insync.replicas"] = 3, "2"
		}
		if err := kafkax.CreateTopics(ctx, kafkax.Plaintext(brokers), spec); err != nil {
			t.Fatal(err)
		}
		return name
	}
	e.usage = topic(2, nil)
	e.accounts = topic(1, nil)
	e.ledger = topic(1, nil)
	e.billing = topic(1, nil)
	e.status = topic(1, map[string]string{"cleanup.policy": "compact"})
	e.journal = topic(1, nil)
	e.dlq = topic(1, nil)
	var cfg chx.Config
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if server == nil {
		// Over HTTP, as the roles talk to ClickHouse: the local chDB engine aborts when a native
		// client dies mid-query, which stopping an in-process worker can do.
		e.conn, cfg = testinfra.ClickHouse(t, clickhouse.HTTP)
		e.chHTTP = "http://" + testinfra.ClickHouseHTTPAddr()
	} else {
		cfg, e.chHTTP = server.HTTPConfig("tally"), server.HTTPURL()
	}
	e.db = cfg.Database
	if _, err := chx.Migrate(ctx, cfg, chschema.Migrations, discard()); err != nil {
		t.Fatal(err)
	}
	if e.conn == nil {
		var err error
		if e.conn, err = chx.Open(ctx, cfg); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = e.conn.Close() })
	}
	e.sinkGroup = testinfra.UniqueName(t, "sink")
	return e
}

func (e *env) startSink(t *testing.T, ctx context.Context) {
	s, err := sink.New(sink.Config{Brokers: e.brokers, Topic: e.usage, DLQTopic: e.dlq, Group: e.sinkGroup, BatchRows: 500,
		FlushInterval: 100 * time.Millisecond, SessionTimeout: 6 * time.Second, Location: shanghai, Services: settle.DefaultCatalogue()},
		e.conn, discard(), sink.NewMetrics(prometheus.NewRegistry()))
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = s.Run(ctx) }()
}

func (e *env) startWorker(t *testing.T, ctx context.Context) (chan error, *worker.Metrics) {
	metrics := worker.NewMetrics(prometheus.NewRegistry())
	w, err := worker.New(worker.Config{Brokers: e.brokers, UsageTopic: e.usage, AccountsTopic: e.accounts, LedgerTopic: e.ledger,
		BillingTopic: e.billing, StatusTopic: e.status, JournalTopic: e.journal, SinkGroup: e.sinkGroup, Billing: billingConfig(),
		Grace: time.Hour, Clock: e.clock.Now, PollInterval: 50 * time.Millisecond}, e.conn, discard(), metrics)
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- w.Run(ctx) }()
	return done, metrics
}

// send writes one event to topic as received at the virtual clock's instant.
func (e *env) send(t *testing.T, topic, key, typ, id, when string, data string) {
	t.Helper()
	e.clock.Set(when)
	raw := contract.MustEncode(contract.Event{ID: id, Source: "test", Type: typ, Time: at(when), Data: json.RawMessage(data)})
	testinfra.Produce(t, e.brokers, topic, []kafka.Message{{Key: []byte(key), Value: raw, Time: at(when)}})
}

func (e *env) usageCall(t *testing.T, id, account, service string, calls int, happened, received string) {
	t.Helper()
	e.clock.Set(received)
	raw := contract.MustEncode(contract.Event{ID: id, Source: "gw", Type: contract.UsageType, Time: at(happened),
		Data: contract.UsageData{Account: account, Service: service, Calls: int64(calls)}})
	testinfra.Produce(t, e.brokers, e.usage, []kafka.Message{{Key: []byte(account), Value: raw, Time: at(received)}})
}

// billingLines waits until the billing topic holds n events and returns them.
func (e *env) billingLines(t *testing.T, n int) []string {
	t.Helper()
	return e.billingLinesUntil(t, func(lines []string) bool { return len(lines) >= n })
}

// billingLinesUntil reads the billing topic until done says so (or 90 s pass).
func (e *env) billingLinesUntil(t *testing.T, done func([]string) bool) []string {
	t.Helper()
	deadline := time.Now().Add(90 * time.Second)
	for {
		var lines []string
		r := kafka.NewReader(kafka.ReaderConfig{Brokers: e.brokers, Topic: e.billing, Partition: 0, MaxWait: 50 * time.Millisecond})
		_ = r.SetOffset(kafka.FirstOffset)
		for {
			ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
			m, err := r.ReadMessage(ctx)
			cancel()
			if err != nil {
				break
			}
			lines = append(lines, string(m.Value))
		}
		r.Close()
		if done(lines) || time.Now().After(deadline) {
			return lines
		}
		time.Sleep(300 * time.Millisecond)
	}
}

// journalledOnce checks that the journal holds each account and ledger input once: a restart
// resumes every input topic where the journal (or the snapshot) left it. The one repeat allowed
// is a writer's retry after a broker died before answering, which Kafka cannot refuse (kafka-go
// has no idempotent producer): the same bytes again, which the worker's walk of the journal drops
// (journalCopies). A repeat with other bytes is the input journalled a second time. It returns how
// many retry copies there were.
func journalledOnce(t *testing.T, e *env) int {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	first, copies := map[string][]byte{}, 0
	if err := kafkax.ReadPartitionFrom(ctx, kafkax.Plaintext(e.brokers), e.journal, 0, kafka.FirstOffset, func(m kafka.Message) error {
		h := map[string]string{}
		for _, x := range m.Headers {
			h[x.Key] = string(x.Value)
		}
		k := fmt.Sprintf("%s/%s@%s", h["tally-source-topic"], h["tally-source-partition"], h["tally-source-offset"])
		if h["tally-source-topic"] == "" { // a tick: its id names its instant
			var ev struct{ ID string }
			if err := json.Unmarshal(m.Value, &ev); err != nil {
				return err
			}
			k = ev.ID
		}
		switch prev, ok := first[k]; {
		case !ok:
			first[k] = m.Value
		case bytes.Equal(prev, m.Value):
			copies++
		default:
			return fmt.Errorf("input %s journalled twice (journal offset %d): %s, then %s", k, m.Offset, prev, m.Value)
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	return copies
}

// distinctEvents is lines without repeats of an event already there: SPEC §3 lets the billing
// topic deliver an event again (ids are deterministic, the ledger deduplicates), which a writer's
// retry after a broker died before answering does. An id again with other bytes fails the test.
func distinctEvents(t *testing.T, lines []string) (distinct []string, copies int) {
	t.Helper()
	seen := map[string]string{}
	for _, l := range lines {
		id := l[strings.Index(l, `"id":"`)+6:]
		id = id[:strings.Index(id, `"`)]
		if prev, ok := seen[id]; ok {
			if prev != l {
				t.Fatalf("event %s emitted twice, differently:\n%s\n%s", id, prev, l)
			}
			copies++
			continue
		}
		seen[id] = l
		distinct = append(distinct, l)
	}
	return distinct, copies
}

func replayExport(t *testing.T, e *env) []string {
	t.Helper()
	return replayExportWith(t, e, time.Hour)
}

// replayExportWith replays the exported log with the workers' grace.
func replayExportWith(t *testing.T, e *env, grace time.Duration) []string {
	t.Helper()
	var log bytes.Buffer
	if _, err := worker.Export(context.Background(), kafkax.Plaintext(e.brokers), e.journal, e.conn, &log); err != nil {
		t.Fatal(err)
	}
	var out, rej bytes.Buffer
	if _, err := settle.Replay(&log, &out, &rej, billingConfig(), settle.ReplayOptions{Grace: grace}); err != nil {
		t.Fatal(err)
	}
	if rej.Len() > 0 {
		t.Fatalf("replay rejected lines of the export:\n%s", rej.String())
	}
	return strings.Split(strings.TrimSpace(out.String()), "\n")
}

// The whole pipeline (Kafka → sink → ClickHouse → settle worker → billing topic) emits exactly
// what `tally replay` emits over the exported log, and a worker restarted mid-run emits nothing
// twice.
func TestPipelineBillingEqualsReplay(t *testing.T) {
	e := setup(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	e.startSink(t, ctx)
	e.clock.Set("2026-10-01T08:00:00+08:00")
	done, firstMetrics := e.startWorker(t, ctx)
	e.send(t, e.accounts, "acme", contract.ActivatedType, "act-1", "2026-10-01T09:00:00+08:00", `{"account":"acme","service":"image-tagging"}`)
	e.send(t, e.accounts, "globex", contract.PriceOverrideType, "po-1", "2026-10-02T09:00:00+08:00",
		`{"account":"globex","service":"vehicle-recognition","effective_from":"2026-10-01T00:00:00+08:00","tiers":[{"from_calls":0,"unit_price":"2.0"}]}`)
	e.usageCall(t, "u1", "acme", "image-tagging", 600_000, "2026-10-03T10:00:00+08:00", "2026-10-03T10:00:01+08:00")
	e.usageCall(t, "u2", "acme", "image-tagging", 399_000, "2026-10-04T10:00:00+08:00", "2026-10-04T10:00:01+08:00")
	e.usageCall(t, "u2", "acme", "image-tagging", 399_000, "2026-10-04T10:00:00+08:00", "2026-10-04T10:00:09+08:00") // retry
	e.usageCall(t, "u3", "globex", "vehicle-recognition", 50_000, "2026-10-05T10:00:00+08:00", "2026-10-05T10:00:01+08:00")
	e.usageCall(t, "u4", "acme", "image-tagging", 500, "2026-10-31T23:59:00+08:00", "2026-11-01T00:30:00+08:00") // within the grace hour

	time.Sleep(time.Second)                  // the worker journals the account inputs at their virtual instants
	e.clock.Set("2026-11-01T01:00:00+08:00") // October settles now
	oct := e.billingLines(t, 4)
	if len(oct) != 4 {
		select {
		case err := <-done:
			t.Fatalf("worker stopped: %v", err)
		default:
		}
		t.Fatalf("after October: %d events\n%s", len(oct), strings.Join(oct, "\n"))
	}
	// The ledger fails globex's hold; the worker restarts; a recharge and a placed hold follow.
	e.send(t, e.ledger, "globex", contract.HoldFailedType, "hf-1", "2026-11-01T02:00:00+08:00", `{"account":"globex","hold_id":"hold:globex:2026-11"}`)
	e.billingLines(t, 5)
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	ctx, cancel2 := context.WithCancel(context.Background())
	defer cancel2()
	e.startSink(t, ctx)
	done, metrics := e.startWorker(t, ctx)
	e.usageCall(t, "u5", "acme", "image-tagging", 2_000, "2026-10-31T23:59:30+08:00", "2026-11-02T08:00:00+08:00") // late: crosses a tier
	e.send(t, e.ledger, "globex", contract.RechargedType, "rc-1", "2026-11-03T09:00:00+08:00", `{"account":"globex","amount":"500.00"}`)
	e.billingLines(t, 6) // the hold is requested again
	e.send(t, e.ledger, "globex", contract.HoldPlacedType, "hp-1", "2026-11-03T09:00:05+08:00", `{"account":"globex","hold_id":"hold:globex:2026-11"}`)
	e.billingLines(t, 7) // and the account resumes
	e.usageCall(t, "u6", "globex", "vehicle-recognition", 1_000, "2026-11-10T10:00:00+08:00", "2026-11-10T10:00:01+08:00")
	e.clock.Set("2026-12-01T01:00:01+08:00") // November settles
	got := e.billingLines(t, 12)
	cancel2()
	if err := <-done; err != nil {
		t.Fatalf("worker: %v", err)
	}

	// The restart resumed from the snapshot October's settlement saved, after its tick, not from
	// the start of the journal; November's settlement saved another.
	if saved := testutil.ToFloat64(firstMetrics.SnapshotsSaved); saved != 1 {
		t.Fatalf("first worker saved %v snapshots, want 1 (after October)", saved)
	}
	// October's four first copies (u2's retry is not one) reached the engine as month totals.
	if summed, single := testutil.ToFloat64(firstMetrics.UsageRead.WithLabelValues("summary")), testutil.ToFloat64(firstMetrics.UsageRead.WithLabelValues("event")); summed != 4 || single != 0 {
		t.Fatalf("first worker read %v usage events as summaries and %v one by one, want 4 and 0", summed, single)
	}
	if from := testutil.ToFloat64(metrics.RecoveryOffset); from < 3 {
		t.Fatalf("the restart replayed the journal from offset %v, not after October's tick", from)
	}
	if saved := testutil.ToFloat64(metrics.SnapshotsSaved); saved != 1 {
		t.Fatalf("second worker saved %v snapshots, want 1 (after November)", saved)
	}

	journalledOnce(t, e)

	want := replayExport(t, e)
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Fatalf("billing topic differs from replay of the export\n--- billing topic\n%s\n--- replay\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	for _, must := range []string{`"id":"tally.account.suspended.v1:hold:globex:2026-11"`, `"id":"tally.hold.requested.v1:hold:globex:2026-11:1"`,
		`"id":"tally.account.resumed.v1:hold:globex:2026-11:1"`, `"calls_before":999500,"calls_after":1001500`} {
		if !strings.Contains(strings.Join(got, "\n"), must) {
			t.Errorf("billing topic lacks %s", must)
		}
	}
	ids := map[string]bool{}
	for _, l := range got {
		id := l[strings.Index(l, `"id":"`)+6:]
		id = id[:strings.Index(id, `"`)]
		if ids[id] {
			t.Fatalf("event %s emitted twice", id)
		}
		ids[id] = true
	}
	t.Logf("%d events, equal to the replay of the exported log", len(got))
}

// A worker that was down on day 1 settles when it starts on day 2, at the month's settlement
// instant (so the bill is what it would have been on day 1), and settling again emits nothing.
func TestWorkerDownOnDayOneSettlesOnDayTwo(t *testing.T) {
	e := setup(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	e.startSink(t, ctx)
	e.usageCall(t, "u1", "acme", "image-tagging", 20_000, "2026-10-05T10:00:00+08:00", "2026-10-05T10:00:01+08:00")
	e.usageCall(t, "u2", "acme", "image-tagging", 1_000, "2026-10-31T23:00:00+08:00", "2026-11-01T09:00:00+08:00") // late: after the instant
	e.clock.Set("2026-11-02T10:00:00+08:00")
	done, _ := e.startWorker(t, ctx)
	got := e.billingLines(t, 2)
	if len(got) != 2 || !strings.Contains(got[0], `"time":"2026-11-01T01:00:00+08:00"`) || !strings.Contains(got[0], `"calls":20000`) {
		t.Fatalf("day-2 settlement:\n%s", strings.Join(got, "\n"))
	}
	cancel()
	<-done
	// Restarted: nothing new.
	ctx2, cancel2 := context.WithCancel(context.Background())
	defer cancel2()
	done, _ = e.startWorker(t, ctx2)
	time.Sleep(3 * time.Second)
	if again := e.billingLines(t, 2); len(again) != 2 {
		t.Fatalf("a restart emitted again:\n%s", strings.Join(again, "\n"))
	}
	cancel2()
	<-done
}

// A deployment that starts after the month, with the month's usage ingested only then (a first
// start, a restore, a re-ingest): nothing was received before October's instant, so no run could
// have billed October then. The worker settles October when it starts, on day 2, instead of
// waiting for the next month's instant; the calls recorded after October's instant are late by
// SPEC §5 and are billed as October's adjustment at December's settlement; and the billing topic
// equals the replay of the exported log.
func TestFirstStartAfterTheMonthBackfills(t *testing.T) {
	e := setup(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	e.startSink(t, ctx)
	e.usageCall(t, "u1", "acme", "image-tagging", 20_000, "2026-10-05T10:00:00+08:00", "2026-11-02T09:00:00+08:00")
	e.usageCall(t, "u2", "acme", "image-tagging", 1_000, "2026-10-31T23:00:00+08:00", "2026-11-02T09:00:01+08:00")
	e.usageCall(t, "u3", "acme", "image-tagging", 7, "2026-11-02T08:00:00+08:00", "2026-11-02T09:00:02+08:00") // November's
	testinfra.WaitForOffsets(t, e.conn, testinfra.EndOffsets(t, e.brokers, e.usage, 2), 30*time.Second,
		"SELECT kafka_partition, max(kafka_offset) + 1 FROM usage_events GROUP BY kafka_partition")
	e.clock.Set("2026-11-02T10:00:00+08:00")
	done, _ := e.startWorker(t, ctx)
	got := e.billingLines(t, 2)
	if len(got) != 2 || !strings.Contains(got[0], `"id":"tally.bill.issued.v1:bill:acme:2026-10"`) ||
		!strings.Contains(got[1], `"id":"tally.hold.requested.v1:hold:acme:2026-11"`) {
		t.Fatalf("day-2 start, want October's bill and November's hold:\n%s", strings.Join(got, "\n"))
	}
	e.clock.Set("2026-12-01T01:00:01+08:00")
	got = e.billingLinesUntil(t, func(lines []string) bool { return strings.Contains(strings.Join(lines, "\n"), "bill:acme:2026-11") })
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	all := strings.Join(got, "\n")
	if !strings.Contains(all, `"calls":20000`) || !strings.Contains(all, `"calls_before":20000,"calls_after":21000`) {
		t.Fatalf("October's 21,000 calls are not all billed (bill, then the late call as an adjustment):\n%s", all)
	}
	if want := replayExport(t, e); all != strings.Join(want, "\n") {
		t.Fatalf("billing topic differs from replay of the export\n--- billing topic\n%s\n--- replay\n%s", all, strings.Join(want, "\n"))
	}
}

// Two instances in one election: only the one holding the journal settles; when it stops, the
// standby recovers and goes on, and the billing topic is still exactly the replay of the log.
func TestStandbyTakesOverFromTheLeader(t *testing.T) {
	e := setup(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	e.startSink(t, ctx)
	e.clock.Set("2026-10-01T08:00:00+08:00")
	group := testinfra.UniqueName(t, "leader")
	type instance struct {
		elected *worker.Elected
		metrics *worker.Metrics
		stop    context.CancelFunc
		done    chan error
	}
	start := func() *instance {
		metrics := worker.NewMetrics(prometheus.NewRegistry())
		el, err := worker.NewElected(worker.Config{Brokers: e.brokers, UsageTopic: e.usage, AccountsTopic: e.accounts, LedgerTopic: e.ledger,
			BillingTopic: e.billing, StatusTopic: e.status, JournalTopic: e.journal, SinkGroup: e.sinkGroup, Billing: billingConfig(),
			Grace: time.Hour, Clock: e.clock.Now, PollInterval: 50 * time.Millisecond}, e.conn, discard(), metrics, group, 6*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		ictx, stop := context.WithCancel(ctx)
		in := &instance{elected: el, metrics: metrics, stop: stop, done: make(chan error, 1)}
		go func() { in.done <- el.Run(ictx) }()
		return in
	}
	leading := func(in *instance) bool { return testutil.ToFloat64(in.metrics.Leading) == 1 }
	exactlyOne := func(a, b *instance) {
		deadline := time.Now().Add(60 * time.Second)
		for leading(a) == leading(b) && time.Now().Before(deadline) {
			time.Sleep(100 * time.Millisecond)
		}
		if leading(a) == leading(b) {
			t.Fatalf("leading: a %t, b %t; want exactly one", leading(a), leading(b))
		}
	}
	a, b := start(), start()
	exactlyOne(a, b)
	e.send(t, e.accounts, "acme", contract.ActivatedType, "act-1", "2026-10-01T09:00:00+08:00", `{"account":"acme","service":"image-tagging"}`)
	e.usageCall(t, "u1", "acme", "image-tagging", 600_000, "2026-10-03T10:00:00+08:00", "2026-10-03T10:00:01+08:00")
	time.Sleep(time.Second)
	e.clock.Set("2026-11-01T01:00:00+08:00") // October settles, on whichever leads
	if oct := e.billingLines(t, 2); len(oct) != 2 {
		t.Fatalf("after October: %d events", len(oct))
	}
	// The second one's joining may have moved the lease; either way exactly one leads.
	exactlyOne(a, b)
	leader, standby := a, b
	if leading(b) {
		leader, standby = b, a
	}

	leader.stop()
	if err := <-leader.done; err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(60 * time.Second)
	for !leading(standby) && time.Now().Before(deadline) {
		time.Sleep(100 * time.Millisecond)
	}
	if !leading(standby) {
		t.Fatal("the standby never took over")
	}
	e.send(t, e.ledger, "acme", contract.HoldFailedType, "hf-1", "2026-11-01T02:00:00+08:00", `{"account":"acme","hold_id":"hold:acme:2026-11"}`)
	e.usageCall(t, "u2", "acme", "image-tagging", 1_000, "2026-11-10T10:00:00+08:00", "2026-11-10T10:00:01+08:00")
	time.Sleep(time.Second)
	e.clock.Set("2026-12-01T01:00:01+08:00") // November settles, on the former standby
	got := e.billingLinesUntil(t, func(lines []string) bool {
		return strings.Contains(strings.Join(lines, "\n"), "bill:acme:2026-11")
	})
	standby.stop()
	<-standby.done
	journalledOnce(t, e)
	want := replayExport(t, e)
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Fatalf("billing topic differs from replay of the export\n--- billing topic\n%s\n--- replay\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	if !strings.Contains(strings.Join(got, "\n"), "tally.account.suspended.v1:hold:acme:2026-11") {
		t.Fatalf("the new leader did not act on the ledger's reply:\n%s", strings.Join(got, "\n"))
	}
	if from := testutil.ToFloat64(standby.metrics.RecoveryOffset); from < 2 {
		t.Fatalf("the new leader replayed the journal from offset %v, not from the snapshot", from)
	}
}

// Account or ledger inputs Kafka deleted before the worker journalled them stop the worker,
// loudly, instead of being skipped (kafka-go would move past them): settling without a recharge
// or a pack would bill wrongly.
func TestWorkerStopsOnInputsDeletedBeforeItReadThem(t *testing.T) {
	e := setup(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	e.clock.Set("2026-10-02T10:00:00+08:00")
	for i := range 3 {
		e.send(t, e.accounts, "acme", contract.ActivatedType, fmt.Sprintf("act-%d", i), "2026-10-02T10:00:00+08:00", `{"account":"acme","service":"image-tagging"}`)
	}
	testinfra.KafkaDeleteRecords(t, e.brokers, e.accounts, 0, 2)
	done, _ := e.startWorker(t, ctx)
	select {
	case err := <-done:
		var gone *kafkax.DeletedError
		if !errors.As(err, &gone) || gone.From != 0 || gone.First != 2 || gone.Topic != e.accounts {
			t.Fatalf("worker stopped with %v; want the deleted records of %s/0 [0, 2)", err, e.accounts)
		}
	case <-time.After(time.Minute):
		t.Fatal("the worker went on without the deleted inputs")
	}
}

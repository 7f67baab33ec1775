package sink_test

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/segmentio/kafka-go"

	chschema "github.com/tally-billing/tally/deploy/clickhouse"
	"github.com/tally-billing/tally/ingest/sink"
	"github.com/tally-billing/tally/internal/chx"
	"github.com/tally-billing/tally/internal/kafkax"
	"github.com/tally-billing/tally/internal/testinfra"
	"github.com/tally-billing/tally/settle"
)

func newSink(t *testing.T, e *env) (*sink.Sink, *sink.Metrics) {
	t.Helper()
	loc, _ := time.LoadLocation("Asia/Shanghai")
	m := sink.NewMetrics(prometheus.NewRegistry())
	s, err := sink.New(sink.Config{Brokers: e.brokers, Topic: e.topic, DLQTopic: e.dlq, Group: e.grp, BatchRows: 100,
		FlushInterval: 100 * time.Millisecond, SessionTimeout: 6 * time.Second, GapPollInterval: 100 * time.Millisecond,
		Location: loc, Services: settle.DefaultCatalogue()}, e.conn, slog.New(slog.NewTextHandler(io.Discard, nil)), m)
	if err != nil {
		t.Fatal(err)
	}
	return s, m
}

// drain runs a sink until it has written every partition to its end, then stops it.
func drain(t *testing.T, e *env) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := runSink(t, e, ctx)
	waitForProgress(t, e, time.Minute)
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}

func usageRecords(from, to int) []kafka.Message {
	var msgs []kafka.Message
	for i := from; i < to; i++ {
		msgs = append(msgs, kafka.Message{Key: []byte("acme"), Value: usage(fmt.Sprintf("g%d", i), "acme", "image-tagging", 1, "2026-10-05T10:00:00+08:00")})
	}
	return msgs
}

func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(time.Minute)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// Records Kafka deleted before the sink read them (retention overtaking a stopped sink; here
// Kafka's own kafka-delete-records tool) stop the partition loudly (readiness, metric, a
// usage_gaps row) instead of being skipped, until an operator acknowledges the loss.
func TestSinkStopsOnRecordsDeletedBeforeItReadThem(t *testing.T) {
	e := setupWith(t, 1, map[string]string{"retention.ms": "604800000"}) // 7 days: the gauge reports it
	produce(t, e, usageRecords(0, 10))
	drain(t, e)

	// While the sink is down, 10 more arrive and Kafka drops all but the last 5.
	produce(t, e, usageRecords(10, 20))
	testinfra.KafkaDeleteRecords(t, e.brokers, e.topic, 0, 15)

	s, m := newSink(t, e)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()
	eventually(t, "the sink to report the gap", func() bool { return s.Ready(ctx) != nil })
	if err := s.Ready(ctx); !strings.Contains(err.Error(), "partition 0 stopped (deleted_before_read, offsets 10-15)") {
		t.Fatalf("readiness: %v", err)
	}
	if v := testutil.ToFloat64(m.Stopped.WithLabelValues("0", sink.GapDeleted)); v != 5 {
		t.Fatalf("stopped-records gauge %v; want 5", v)
	}
	var gaps []sink.Gap
	eventually(t, "the gap to be recorded", func() bool {
		gaps, _ = sink.ListGaps(ctx, e.conn)
		return len(gaps) == 1
	})
	if g := gaps[0]; g.From != 10 || g.To != 15 || g.Partition != 0 || g.Consumer != e.grp || !g.AcknowledgedAt.IsZero() {
		t.Fatalf("recorded gap %+v", g)
	}
	time.Sleep(500 * time.Millisecond) // the stopped partition must not move on by itself
	if n := count(t, e, "SELECT count() FROM usage_events FINAL"); n != 10 {
		t.Fatalf("%d rows while stopped; want the 10 written before the gap, none after it", n)
	}

	if _, err := sink.AcknowledgeGap(ctx, e.conn, e.grp, e.topic, 0, 11, "test", ""); err == nil {
		t.Fatal("acknowledging a gap that is not recorded was accepted")
	}
	if _, err := sink.AcknowledgeGap(ctx, e.conn, e.grp, e.topic, 0, 10, "", ""); err == nil {
		t.Fatal("an acknowledgement by nobody was accepted")
	}
	if _, err := sink.AcknowledgeGap(ctx, e.conn, e.grp, e.topic, 0, 10, "test", "records gone for good"); err != nil {
		t.Fatal(err)
	}
	waitForProgress(t, e, time.Minute)
	eventually(t, "readiness after the acknowledgement", func() bool { return s.Ready(ctx) == nil })
	if n := count(t, e, "SELECT count() FROM usage_events FINAL"); n != 15 {
		t.Fatalf("%d rows after the acknowledgement; want 10 + the 5 after the gap", n)
	}
	if v := testutil.ToFloat64(m.Stopped.WithLabelValues("0", sink.GapDeleted)); v != 0 {
		t.Fatalf("stopped-records gauge %v after the acknowledgement", v)
	}
	if v := testutil.ToFloat64(m.Retention); v != 7*24*3600 {
		t.Errorf("retention gauge %v; want 604800", v)
	}
	eventually(t, "the unwritten-age gauge to say caught up", func() bool { return testutil.ToFloat64(m.UnwrittenAge.WithLabelValues("0")) == 0 })
	if gaps, _ = sink.ListGaps(ctx, e.conn); len(gaps) != 1 || gaps[0].AcknowledgedBy != "test" || gaps[0].AcknowledgedAt.IsZero() {
		t.Fatalf("gaps after the acknowledgement: %+v", gaps)
	}
	if _, err := sink.AcknowledgeGap(ctx, e.conn, e.grp, e.topic, 0, 10, "test", ""); err == nil {
		t.Fatal("a second acknowledgement was accepted")
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}

// A usage topic recreated under a database that has progress for it: the sink stops the
// partition rather than skip the new topic's first records.
func TestSinkStopsWhenItsProgressIsPastTheTopic(t *testing.T) {
	e := setup(t, 1)
	produce(t, e, usageRecords(0, 10))
	drain(t, e)
	actx, acancel := context.WithTimeout(context.Background(), time.Minute)
	defer acancel()
	if err := kafkax.DeleteTopics(actx, kafkax.Plaintext(e.brokers), e.topic); err != nil {
		t.Fatal(err)
	}
	eventually(t, "the topic to be created again", func() bool {
		return kafkax.CreateTopics(actx, kafkax.Plaintext(e.brokers), kafkax.TopicSpec{Name: e.topic, Partitions: 1}) == nil
	})
	produce(t, e, usageRecords(100, 103))

	s, m := newSink(t, e)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()
	eventually(t, "the sink to stop the partition", func() bool { return s.Ready(ctx) != nil })
	if err := s.Ready(ctx); !strings.Contains(err.Error(), "progress_past_end, offsets 3-10") {
		t.Fatalf("readiness: %v", err)
	}
	if v := testutil.ToFloat64(m.Stopped.WithLabelValues("0", sink.GapAhead)); v != 7 {
		t.Fatalf("stopped-records gauge %v; want 7", v)
	}
	if n := count(t, e, "SELECT count() FROM usage_events FINAL"); n != 10 {
		t.Fatalf("%d rows; want the first topic's 10, none of the new one's mistaken for them", n)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}

// The audit accounts for every offset below the sink's progress, from Kafka's side: rows, dead
// letters and acknowledged gaps, and finds a row lost inside ClickHouse.
func TestAuditAccountsForEveryOffset(t *testing.T) {
	e := setup(t, 1)
	msgs := usageRecords(0, 10)
	msgs = append(msgs[:4], append([]kafka.Message{{Key: []byte("acme"), Value: []byte("not an event")}}, msgs[4:]...)...) // offset 4: a dead letter
	produce(t, e, msgs)
	drain(t, e)
	// Offsets 11..15, then a gateway retry of g13 (offset 14) at 16.
	produce(t, e, append(usageRecords(10, 15), usageRecords(13, 14)...))
	testinfra.KafkaDeleteRecords(t, e.brokers, e.topic, 0, 13)
	s, _ := newSink(t, e)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()
	var gaps []sink.Gap
	eventually(t, "the gap to be recorded", func() bool {
		gaps, _ = sink.ListGaps(ctx, e.conn)
		return len(gaps) == 1
	})
	if _, err := sink.AcknowledgeGap(ctx, e.conn, e.grp, e.topic, 0, gaps[0].From, "test", ""); err != nil {
		t.Fatal(err)
	}
	waitForProgress(t, e, time.Minute)
	// Merged, usage_events keeps the first copy only: the retry's row is gone, its record is not.
	if err := e.conn.Exec(ctx, "OPTIMIZE TABLE usage_events FINAL"); err != nil {
		t.Fatal(err)
	}
	loc, _ := time.LoadLocation("Asia/Shanghai")
	cfg := sink.AuditConfig{Brokers: e.brokers, Topic: e.topic, DLQTopic: e.dlq, Group: e.grp, Location: loc, Services: settle.DefaultCatalogue()}
	audit, err := sink.Audit(ctx, e.conn, cfg)
	if err != nil {
		t.Fatal(err)
	}
	want := sink.PartitionAudit{Partition: 0, LogStart: 13, End: 17, Progress: 17, Rows: 13, Retries: 1, DeadLetters: 1, Gap: 2}
	if len(audit) != 1 || fmt.Sprintf("%+v", audit[0]) != fmt.Sprintf("%+v", want) || !audit[0].Clean() {
		t.Fatalf("audit %+v; want %+v", audit, want)
	}
	// A row that vanished from ClickHouse is found missing, by its offset; below the log start,
	// where Kafka cannot tell a merged retry from a loss, it is unverifiable.
	if err := e.conn.Exec(ctx, "ALTER TABLE usage_events DELETE WHERE kafka_offset IN (2, 15) SETTINGS mutations_sync = 1"); err != nil {
		t.Fatal(err)
	}
	if audit, err = sink.Audit(ctx, e.conn, cfg); err != nil {
		t.Fatal(err)
	}
	if audit[0].Clean() || fmt.Sprint(audit[0].Missing) != "[{15 16}]" || audit[0].Unverifiable != 1 || audit[0].Rows != 11 {
		t.Fatalf("audit after rows were deleted: %+v", audit[0])
	}
	cancel()
	<-done
}

// The sink through a ClickHouse that is killed and started again under it: writes fail, the
// partition retries from the progress ClickHouse kept, and in the end every record is a row
// once (the audit accounts for each offset) and no batch is lost or doubled.
func TestSinkRidesOutAClickHouseRestart(t *testing.T) {
	server := testinfra.StartClickHouse(t)
	brokers, topic := testinfra.Topic(t, 2, nil)
	_, dlq := testinfra.Topic(t, 1, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	cfg := server.HTTPConfig("tally")
	if _, err := chx.Migrate(ctx, cfg, chschema.Migrations, slog.New(slog.NewTextHandler(io.Discard, nil))); err != nil {
		t.Fatal(err)
	}
	conn, err := chx.Open(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	e := &env{brokers: brokers, topic: topic, dlq: dlq, grp: testinfra.UniqueName(t, "sink"), conn: conn, cfg: cfg, partitions: 2}
	s, m := newSink(t, e)
	sctx, stop := context.WithCancel(ctx)
	defer stop()
	done := make(chan error, 1)
	go func() { done <- s.Run(sctx) }()
	for wave := range 6 {
		var msgs []kafka.Message
		for i := range 200 {
			acct := fmt.Sprintf("acct-%d", i%9)
			msgs = append(msgs, kafka.Message{Key: []byte(acct), Value: usage(fmt.Sprintf("w%d-%d", wave, i), acct, "image-tagging", 1, "2026-10-05T10:00:00+08:00")})
		}
		produce(t, e, msgs)
		if wave == 2 {
			server.Kill()
			time.Sleep(2 * time.Second)
			server.Start()
		}
		time.Sleep(300 * time.Millisecond)
	}
	waitForProgress(t, e, 2*time.Minute)
	if f := testutil.ToFloat64(m.Errors); f == 0 {
		t.Error("no partition failed while ClickHouse was down: the restart did not test anything")
	}
	if n := count(t, e, "SELECT count() FROM usage_events FINAL"); n != 1200 {
		t.Fatalf("%d rows after FINAL; want 1200", n)
	}
	loc, _ := time.LoadLocation("Asia/Shanghai")
	audit, err := sink.Audit(ctx, conn, sink.AuditConfig{Brokers: brokers, Topic: topic, DLQTopic: dlq, Group: e.grp, Location: loc, Services: settle.DefaultCatalogue()})
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range audit {
		if !p.Clean() || p.Pending != 0 || p.Rows+p.Retries != p.Progress {
			t.Errorf("audit of partition %d: %+v", p.Partition, p)
		}
	}
	stop()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}

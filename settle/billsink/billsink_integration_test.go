package billsink_test

import (
	"bufio"
	"context"
	"encoding/json"
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
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/segmentio/kafka-go"
	"github.com/shopspring/decimal"

	"github.com/tally-billing/tally/contract"
	chschema "github.com/tally-billing/tally/deploy/clickhouse"
	"github.com/tally-billing/tally/internal/chx"
	"github.com/tally-billing/tally/internal/testinfra"
	"github.com/tally-billing/tally/settle/billsink"
)

// The billing topic of the quarter scenario (bills with adjustments, holds requested and
// released, a suspension and a resumption), with an event delivered twice and two records that
// are no billing output, goes into the tables through a billsink SIGKILLed mid-stream again and
// again, then through a second one that reads the whole topic again in batches cut differently.
// Read with FINAL, the tables hold each bill, line, adjustment, hold and status change once, with
// the golden file's amounts to the cent.
func TestBillsinkHoldsEachBillOnceThroughKillsAndRereads(t *testing.T) {
	if testing.Short() {
		t.Skip("kills processes")
	}
	brokers, topic := testinfra.Topic(t, 2, nil)
	conn, cfg := testinfra.ClickHouse(t, clickhouse.HTTP)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	if _, err := chx.Migrate(ctx, cfg, chschema.Migrations, slog.New(slog.NewTextHandler(io.Discard, nil))); err != nil {
		t.Fatal(err)
	}
	golden := readLines(t, "../testdata/scenarios/quarter.golden.jsonl")
	var msgs []kafka.Message
	for i, line := range golden {
		var ev struct{ Subject string }
		if err := json.Unmarshal([]byte(line), &ev); err != nil {
			t.Fatal(err)
		}
		m := kafka.Message{Key: []byte(ev.Subject), Value: []byte(line)}
		msgs = append(msgs, m)
		if i == 0 {
			msgs = append(msgs, m) // a write retried after a lost answer
		}
	}
	msgs = append(msgs, kafka.Message{Key: []byte("acme"), Value: []byte("not an event")},
		kafka.Message{Key: []byte("acme"), Value: contract.MustEncode(contract.Event{ID: "x-1", Source: "someone", Type: "com.example.other.v1",
			Time: time.Date(2026, 10, 1, 0, 0, 0, 0, time.UTC), Data: map[string]string{"a": "b"}})})
	// One at a time, so the billsink's batches are small and the kills land between them.
	for _, m := range msgs {
		testinfra.Produce(t, brokers, topic, []kafka.Message{m})
	}
	ends := testinfra.EndOffsets(t, brokers, topic, 2)

	bin := testinfra.BuildTally(t, "../..")
	group := testinfra.UniqueName(t, "billsink")
	start := func() *exec.Cmd {
		cmd := exec.Command(bin, "billsink", "--kafka-brokers", strings.Join(brokers, ","), "--topic-billing", topic, "--group", group,
			"--clickhouse-protocol", "http", "--clickhouse-http", "http://"+testinfra.ClickHouseHTTPAddr(), "--clickhouse-database", cfg.Database,
			"--batch-rows", "2", "--flush-interval", "20ms", "--session-timeout", "6s", "--admin-addr", "127.0.0.1:0", "--log-level", "warn")
		cmd.Stderr = io.Discard // it logs the two records it skips, each time it reads them
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		return cmd
	}
	progress := func() uint64 {
		var n uint64
		if err := conn.QueryRow(ctx, "SELECT count() FROM sink_progress WHERE consumer = ?", group).Scan(&n); err != nil {
			t.Fatal(err)
		}
		return n
	}
	r := rand.New(rand.NewPCG(7, 7))
	kills := 0
	for ; kills < 3; kills++ {
		before := progress()
		cmd := start()
		for deadline := time.Now().Add(45 * time.Second); progress() == before && time.Now().Before(deadline); {
			time.Sleep(5 * time.Millisecond)
		}
		time.Sleep(time.Duration(r.IntN(30)) * time.Millisecond)
		_ = cmd.Process.Signal(syscall.SIGKILL)
		_ = cmd.Wait()
	}
	cmd := start()
	waitForProgress(t, conn, group, topic, ends)
	_ = cmd.Process.Signal(syscall.SIGTERM)
	_ = cmd.Wait()

	// A second billsink from nothing over the same tables: every row written again, in batches
	// of 3 (other deduplication tokens), as after a crash that lost the progress.
	again := testinfra.UniqueName(t, "billsink")
	metrics := billsink.NewMetrics(prometheus.NewRegistry())
	s, err := billsink.New(billsink.Config{Brokers: brokers, Topic: topic, Group: again, BatchRows: 3, FlushInterval: 20 * time.Millisecond, SessionTimeout: 6 * time.Second},
		conn, slog.New(slog.NewTextHandler(io.Discard, nil)), metrics)
	if err != nil {
		t.Fatal(err)
	}
	rctx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- s.Run(rctx) }()
	waitForProgress(t, conn, again, topic, ends)
	stop()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	for reason, want := range map[string]float64{billsink.SkipNotCloudEvent: 1, billsink.SkipUnknownType: 1, billsink.SkipBadData: 0} {
		if got := testutil.ToFloat64(metrics.Skipped.WithLabelValues(reason)); got != want {
			t.Errorf("skipped %v records as %s, want %v", got, reason, want)
		}
	}

	want := expectations(t, golden)
	check := func(what, query string, want map[string]string) {
		t.Helper()
		got := map[string]string{}
		rows, err := conn.Query(ctx, query)
		if err != nil {
			t.Fatalf("%s: %v", what, err)
		}
		defer rows.Close()
		for rows.Next() {
			var key string
			var n uint64
			var sum decimal.Decimal
			if err := rows.Scan(&key, &n, &sum); err != nil {
				t.Fatalf("%s: %v", what, err)
			}
			got[key] = fmt.Sprintf("%d × %s", n, sum.StringFixed(2))
		}
		if fmt.Sprint(got) != fmt.Sprint(want) {
			t.Errorf("%s:\n got %v\nwant %v", what, got, want)
		}
	}
	check("bills per month", "SELECT toString(period), count(), sum(total) FROM bills FINAL GROUP BY period", want.bills)
	check("revenue per month and service", "SELECT concat(toString(period), ' ', service), count(), sum(amount) FROM bill_lines FINAL GROUP BY period, service", want.lines)
	check("adjustments", "SELECT concat(toString(bill_period), ' for ', toString(adjusted_period), ' ', service), count(), sum(amount) FROM bill_adjustments FINAL GROUP BY bill_period, adjusted_period, service", want.adjustments)
	check("holds", "SELECT toString(kind), count(), sum(amount) FROM holds FINAL GROUP BY kind", want.holds)
	check("status changes", "SELECT concat(toString(status), ' ', reason), count(), toDecimal64(0, 2) FROM account_status_changes FINAL GROUP BY status, reason", want.statuses)
	var raw, final uint64
	if err := conn.QueryRow(ctx, "SELECT (SELECT count() FROM bill_lines), (SELECT count() FROM bill_lines FINAL)").Scan(&raw, &final); err != nil {
		t.Fatal(err)
	}
	t.Logf("%d kills, then the whole topic read again: %d bill_lines rows stored (copies not merged yet included), %d after FINAL", kills, raw, final)
}

// expected are the tables' aggregates, computed from the golden events with the contract's types.
type expected struct{ bills, lines, adjustments, holds, statuses map[string]string }

func expectations(t *testing.T, golden []string) expected {
	t.Helper()
	type agg struct {
		n   int
		sum decimal.Decimal
	}
	sums := map[string]map[string]*agg{}
	add := func(table, key, amount string) {
		if sums[table] == nil {
			sums[table] = map[string]*agg{}
		}
		a := sums[table][key]
		if a == nil {
			a = &agg{}
			sums[table][key] = a
		}
		a.n++
		if amount != "" {
			a.sum = a.sum.Add(decimal.RequireFromString(amount))
		}
	}
	compact := func(period string) string { return strings.ReplaceAll(period, "-", "") }
	for _, line := range golden {
		var ev struct {
			Type string
			Data json.RawMessage
		}
		if err := json.Unmarshal([]byte(line), &ev); err != nil {
			t.Fatal(err)
		}
		switch ev.Type {
		case contract.BillIssuedType:
			var b contract.Bill
			_ = json.Unmarshal(ev.Data, &b)
			add("bills", compact(b.Period), b.Total)
			for _, l := range b.Lines {
				add("lines", compact(b.Period)+" "+l.Service, l.Amount)
			}
			for _, a := range b.Adjustments {
				add("adjustments", compact(b.Period)+" for "+compact(a.Period)+" "+a.Service, a.Amount)
			}
		case contract.HoldRequestedType, contract.HoldReleasedType:
			var h struct{ Amount string }
			_ = json.Unmarshal(ev.Data, &h)
			add("holds", strings.TrimSuffix(strings.TrimPrefix(ev.Type, "tally.hold."), ".v1"), h.Amount)
		case contract.AccountSuspendedType, contract.AccountResumedType:
			var s contract.AccountStatus
			_ = json.Unmarshal(ev.Data, &s)
			add("statuses", strings.TrimSuffix(strings.TrimPrefix(ev.Type, "tally.account."), ".v1")+" "+s.Reason, "")
		default:
			t.Fatalf("the golden file has an event of type %s", ev.Type)
		}
	}
	out := func(table string) map[string]string {
		m := map[string]string{}
		for k, a := range sums[table] {
			m[k] = fmt.Sprintf("%d × %s", a.n, a.sum.StringFixed(2))
		}
		return m
	}
	if len(sums["adjustments"]) == 0 || len(sums["statuses"]) == 0 {
		t.Fatal("the golden file no longer has adjustments and status changes; pick another")
	}
	return expected{bills: out("bills"), lines: out("lines"), adjustments: out("adjustments"), holds: out("holds"), statuses: out("statuses")}
}

func readLines(t *testing.T, path string) []string {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var out []string
	sc := bufio.NewScanner(f)
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		if line := strings.TrimSpace(sc.Text()); line != "" {
			out = append(out, line)
		}
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}

func waitForProgress(t *testing.T, conn driver.Conn, consumer, topic string, ends map[int32]int64) {
	t.Helper()
	testinfra.WaitForOffsets(t, conn, ends, 2*time.Minute,
		"SELECT kafka_partition, max(next_offset) FROM sink_progress WHERE consumer = ? AND kafka_topic = ? GROUP BY kafka_partition", consumer, topic)
}

package worker_test

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2"
	"github.com/segmentio/kafka-go"

	"github.com/tally-billing/tally/contract"
	chschema "github.com/tally-billing/tally/deploy/clickhouse"
	"github.com/tally-billing/tally/internal/chx"
	"github.com/tally-billing/tally/internal/kafkax"
	"github.com/tally-billing/tally/internal/testinfra"
	"github.com/tally-billing/tally/settle"
)

// BenchmarkSettleMonth settles one month of TALLY_BENCH_ACCOUNTS accounts (default 100,000) × 8
// services end to end with the real `tally settle` process: October's usage is in usage_events
// (TALLY_BENCH_EVENTS_PER_PAIR rows per account and service, default 1, of
// TALLY_BENCH_CALLS_PER_EVENT calls each, default varied by account; put there by ClickHouse
// itself, with the sink's progress saying it is complete), the process starts on November 1st after the grace period and is timed
// until its snapshot is saved: journal, usage read, engine, every bill and hold acknowledged on
// the billing topic, snapshot. It reports the process's peak RSS (VmHWM).
//
// With TALLY_BENCH_KILL=1 the process is SIGKILLed in the middle of the emission and started
// again; the figure is then the restart's time to its snapshot, and the billing topic is checked
// to hold every event exactly once. TALLY_BENCH_CPUPROFILE=file saves a CPU profile of the
// process's first 15 s (go tool pprof -top file), TALLY_BENCH_HEAPPROFILE=file its heap once the
// snapshot is saved.
//
//	make up && TALLY_BENCH_ACCOUNTS=1000000 go test ./settle/worker -run '^$' -bench SettleMonth -benchtime 1x -timeout 30m
func BenchmarkSettleMonth(b *testing.B) {
	accounts, _ := strconv.Atoi(os.Getenv("TALLY_BENCH_ACCOUNTS"))
	if accounts <= 0 {
		accounts = 100_000
	}
	kill := os.Getenv("TALLY_BENCH_KILL") == "1"
	perPair, _ := strconv.Atoi(os.Getenv("TALLY_BENCH_EVENTS_PER_PAIR"))
	perPair = max(perPair, 1)
	callsPerEvent, _ := strconv.Atoi(os.Getenv("TALLY_BENCH_CALLS_PER_EVENT")) // 0: varied by account
	services := settle.DefaultCatalogue().ServiceIDs()
	if len(services) < 8 {
		b.Fatalf("the catalogue has %d services, the benchmark wants 8", len(services))
	}
	services = services[:8]
	bin := testinfra.BuildTally(b, "../..")
	for range b.N {
		b.StopTimer()
		m := newMonthBench(b, accounts, services, perPair, callsPerEvent)
		b.StartTimer()
		r := m.run(b, bin, kill)
		b.StopTimer()
		b.ReportMetric(r.seconds, "s/settlement")
		b.ReportMetric(float64(r.peakRSS)/(1<<20), "MiB-peak-RSS")
		b.Logf("%d accounts × 8, %d usage events (%d calls): %.1f s to the snapshot (usage read %.1f s, settle and emit %.1f s, snapshot %.1f s), %d events, peak RSS %d MiB%s",
			accounts, m.rows, m.calls, r.seconds, r.usageSeconds, r.emitSeconds, r.snapshotSeconds, r.events, r.peakRSS>>20, r.note)
	}
}

type monthBench struct {
	brokers                                           []string
	usage, accounts, ledger, billing, status, journal string
	chHTTP, db, sinkGroup                             string
	rows                                              int
	pairs                                             int
	calls                                             uint64
}

const benchPartitions = 4

func newMonthBench(b *testing.B, accounts int, services []string, perPair, callsPerEvent int) *monthBench {
	m := &monthBench{pairs: accounts * len(services), rows: accounts * len(services) * perPair}
	m.brokers, m.usage = testinfra.Topic(b, benchPartitions, nil)
	_, m.accounts = testinfra.Topic(b, 1, nil)
	_, m.ledger = testinfra.Topic(b, 1, nil)
	_, m.billing = testinfra.Topic(b, benchPartitions, nil)
	_, m.status = testinfra.Topic(b, benchPartitions, map[string]string{"cleanup.policy": "compact"})
	_, m.journal = testinfra.Topic(b, 1, nil)
	conn, cfg := testinfra.ClickHouse(b, clickhouse.HTTP)
	m.chHTTP, m.db, m.sinkGroup = "http://"+testinfra.ClickHouseHTTPAddr(), cfg.Database, testinfra.UniqueName(b, "sink")
	ctx := context.Background()
	if _, err := chx.Migrate(ctx, cfg, chschema.Migrations, discard()); err != nil {
		b.Fatal(err)
	}
	start := time.Now()
	// The usage topic needs the offsets the rows name (the worker covers what the topic holds);
	// the records' bodies do not matter, usage is read from ClickHouse.
	perPartition := (m.rows + benchPartitions - 1) / benchPartitions
	w := &kafka.Writer{Addr: kafka.TCP(m.brokers...), Topic: m.usage, RequiredAcks: kafka.RequireAll, Compression: kafka.Lz4,
		BatchSize: 10_000, BatchBytes: 4 << 20, BatchTimeout: 5 * time.Millisecond,
		Balancer: kafka.BalancerFunc(func(msg kafka.Message, _ ...int) int { return msg.Partition })}
	received := at("2026-10-15T12:00:00+08:00")
	var wg sync.WaitGroup
	errs := make(chan error, benchPartitions)
	for p := range benchPartitions {
		wg.Add(1)
		go func() {
			defer wg.Done()
			batch := make([]kafka.Message, 0, 10_000)
			for i := range perPartition {
				batch = append(batch, kafka.Message{Partition: p, Value: []byte("x"), Time: received})
				if len(batch) == cap(batch) || i == perPartition-1 {
					if err := w.WriteMessages(ctx, batch...); err != nil {
						errs <- err
						return
					}
					batch = batch[:0]
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		b.Fatal(err)
	}
	_ = w.Close()
	quoted := make([]string, len(services))
	for i, s := range services {
		quoted[i] = "'" + s + "'"
	}
	// Row n is of pair n % pairs: account pair/8, service pair%8; partition n%4 at offset n/4.
	// Calls vary by account so the tiers vary too, unless every event has callsPerEvent.
	calls := fmt.Sprintf("toUInt32(1000 + (intDiv(number %% %d, 8) * 7919) %% 900000)", m.pairs)
	if callsPerEvent > 0 {
		calls = fmt.Sprintf("toUInt32(%d)", callsPerEvent)
	}
	insert := fmt.Sprintf(`INSERT INTO usage_events (account, service, period, id, event_time, calls, received_at, kafka_topic, kafka_partition, kafka_offset)
		SELECT concat('acct-', leftPad(toString(intDiv(number %% %d, 8)), 7, '0')), [%s][number %% 8 + 1], 202610, concat('u', toString(number)),
			toDateTime64('2026-10-15 04:00:00', 9, 'UTC') + toIntervalSecond(number %% 86400), %s,
			toDateTime64('2026-10-15 04:00:00', 3, 'UTC') + toIntervalSecond(number %% 86400), '%s', toInt32(number %% %d), toInt64(intDiv(number, %d))
		FROM numbers(%d)`, m.pairs, strings.Join(quoted, ","), calls, m.usage, benchPartitions, benchPartitions, m.rows)
	if err := conn.Exec(ctx, insert); err != nil {
		b.Fatalf("insert usage: %v", err)
	}
	if err := conn.QueryRow(ctx, "SELECT sum(calls) FROM usage_events").Scan(&m.calls); err != nil {
		b.Fatal(err)
	}
	ends, err := kafkax.EndOffsets(ctx, kafkax.Plaintext(m.brokers), m.usage)
	if err != nil {
		b.Fatal(err)
	}
	for p, end := range ends {
		if err := conn.Exec(ctx, "INSERT INTO sink_progress (consumer, kafka_topic, kafka_partition, next_offset, rows, dead_letters, written_at) VALUES (?, ?, ?, ?, 0, 0, now64(3))",
			m.sinkGroup, m.usage, int32(p), end); err != nil {
			b.Fatal(err)
		}
	}
	b.Logf("set-up: %d usage rows and records in %.1f s", m.rows, time.Since(start).Seconds())
	return m
}

type monthResult struct {
	seconds, usageSeconds, emitSeconds, snapshotSeconds float64
	events                                              int64
	peakRSS                                             int64
	note                                                string
}

// settleProcess is a running `tally settle`, its log lines collected.
type settleProcess struct {
	cmd          *exec.Cmd
	admin, pprof string
	mu           sync.Mutex
	logs         []map[string]any
	done         chan struct{}
}

func (m *monthBench) start(b *testing.B, bin string) *settleProcess {
	p := &settleProcess{admin: testinfra.FreeAddr(b), pprof: testinfra.FreeAddr(b), done: make(chan struct{})}
	clock := fmt.Sprintf("virtual=2026-11-01T02:00:01+08:00,real=%d,speed=1", time.Now().UnixMilli())
	p.cmd = exec.Command(bin, "settle", "--kafka-brokers", strings.Join(m.brokers, ","), "--topic-usage", m.usage, "--topic-accounts", m.accounts,
		"--topic-ledger", m.ledger, "--topic-billing", m.billing, "--topic-account-status", m.status, "--topic-settle-journal", m.journal,
		"--sink-group", m.sinkGroup, "--leader-group", "", "--clickhouse-http", m.chHTTP, "--clickhouse-database", m.db,
		"--grace", "2h", "--admin-addr", p.admin, "--pprof-addr", p.pprof, "--log-level", "info")
	p.cmd.Env = append(os.Environ(), "TALLY_VIRTUAL_CLOCK="+clock)
	stderr, err := p.cmd.StderrPipe()
	if err != nil {
		b.Fatal(err)
	}
	if err := p.cmd.Start(); err != nil {
		b.Fatal(err)
	}
	go func() {
		defer close(p.done)
		sc := bufio.NewScanner(stderr)
		sc.Buffer(make([]byte, 1<<20), 1<<20)
		for sc.Scan() {
			var line map[string]any
			if json.Unmarshal(sc.Bytes(), &line) != nil {
				fmt.Fprintln(os.Stderr, sc.Text())
				continue
			}
			if lvl, _ := line["level"].(string); lvl == "WARN" || lvl == "ERROR" {
				fmt.Fprintln(os.Stderr, sc.Text())
			}
			p.mu.Lock()
			p.logs = append(p.logs, line)
			p.mu.Unlock()
		}
	}()
	return p
}

// logged returns the first log line with the message, or nil.
func (p *settleProcess) logged(msg string) map[string]any {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, l := range p.logs {
		if l["msg"] == msg {
			return l
		}
	}
	return nil
}

// peakRSS is the process's high-water resident set (VmHWM), in bytes.
func (p *settleProcess) peakRSS() int64 {
	raw, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", p.cmd.Process.Pid))
	if err != nil {
		return 0
	}
	for line := range strings.SplitSeq(string(raw), "\n") {
		if v, ok := strings.CutPrefix(line, "VmHWM:"); ok {
			kb, _ := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
			return kb << 10
		}
	}
	return 0
}

// save writes the profile the process serves at path to out.
func (p *settleProcess) save(b *testing.B, path, out string) {
	resp, err := http.Get("http://" + p.pprof + path)
	if err != nil {
		b.Logf("%s: %v", path, err)
		return
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	if err := os.WriteFile(out, raw, 0o644); err != nil {
		b.Logf("%s: %v", path, err)
	}
}

// profile writes a CPU profile of the process's first 15 s to out.
func (p *settleProcess) profile(b *testing.B, out string) {
	for i := 0; i < 100 && adminMetric(p.admin, "tally_settle_leading") < 0; i++ { // until the admin server listens
		time.Sleep(20 * time.Millisecond)
	}
	p.save(b, "/debug/pprof/profile?seconds=15", out)
}

func (p *settleProcess) stop(sig syscall.Signal) {
	_ = p.cmd.Process.Signal(sig)
	_ = p.cmd.Wait()
	<-p.done
}

func (m *monthBench) billingEvents(b *testing.B) int64 {
	ends, err := kafkax.EndOffsets(context.Background(), kafkax.Plaintext(m.brokers), m.billing)
	if err != nil {
		b.Fatal(err)
	}
	var n int64
	for _, e := range ends {
		n += e
	}
	return n
}

func (m *monthBench) run(b *testing.B, bin string, kill bool) monthResult {
	var r monthResult
	started := time.Now()
	p := m.start(b, bin)
	if kill {
		for m.billingEvents(b) == 0 {
			time.Sleep(20 * time.Millisecond)
		}
		p.stop(syscall.SIGKILL)
		before := m.billingEvents(b)
		started = time.Now()
		p = m.start(b, bin)
		r.note = fmt.Sprintf("; killed with %d events on the billing topic, restarted", before)
	}
	defer p.stop(syscall.SIGTERM)
	if out := os.Getenv("TALLY_BENCH_CPUPROFILE"); out != "" {
		profiled := make(chan struct{})
		go func() { defer close(profiled); p.profile(b, out) }()
		defer func() { <-profiled }()
	}
	deadline := time.Now().Add(30 * time.Minute)
	for adminMetric(p.admin, "tally_settle_snapshots_saved_total") < 1 {
		if time.Now().After(deadline) {
			b.Fatal("no snapshot after 30 minutes")
		}
		select {
		case <-p.done:
			b.Fatal("tally settle exited")
		case <-time.After(100 * time.Millisecond):
		}
	}
	r.seconds = time.Since(started).Seconds()
	r.peakRSS = p.peakRSS()
	if out := os.Getenv("TALLY_BENCH_HEAPPROFILE"); out != "" {
		p.save(b, "/debug/pprof/heap", out)
	}
	if l := p.logged("settle: settlement emitted"); l != nil {
		r.usageSeconds, _ = l["usage_read_seconds"].(float64)
		r.emitSeconds, _ = l["settle_and_emit_seconds"].(float64)
	}
	if l := p.logged("settle: snapshot saved"); l != nil {
		r.snapshotSeconds, _ = l["seconds"].(float64)
	}
	r.events = m.billingEvents(b)
	if kill {
		m.checkOnce(b)
	}
	return r
}

// checkOnce reads the billing topic: every id once, one bill and one hold per account.
func (m *monthBench) checkOnce(b *testing.B) {
	seen := make(map[string]bool, m.pairs/4)
	bills := 0
	if err := kafkax.ReadAll(context.Background(), kafkax.Plaintext(m.brokers), m.billing, func(msg kafka.Message) error {
		var o struct{ ID, Type string }
		if err := json.Unmarshal(msg.Value, &o); err != nil {
			return err
		}
		if seen[o.ID] {
			return fmt.Errorf("%s emitted twice", o.ID)
		}
		seen[o.ID] = true
		if o.Type == contract.BillIssuedType {
			bills++
		}
		return nil
	}); err != nil {
		b.Fatal(err)
	}
	if want := m.pairs / 8; bills != want {
		b.Fatalf("%d bills on the billing topic, want %d", bills, want)
	}
}

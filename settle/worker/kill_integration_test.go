package worker_test

import (
	"context"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"
	"github.com/shopspring/decimal"

	"github.com/tally-billing/tally/contract"
	"github.com/tally-billing/tally/examples/ledger"
	"github.com/tally-billing/tally/ingest/sink"
	"github.com/tally-billing/tally/internal/cloudevent"
	"github.com/tally-billing/tally/internal/testinfra"
	"github.com/tally-billing/tally/settle"
)

// Ingest, the sink and the settle worker, the roles on the billing path, killed with SIGKILL at
// random moments through two months of gateway traffic (retried until ingest says 200, as a
// gateway does), with a failing hold and a recharge, restarted each time: the billing topic ends
// up exactly what `tally replay` gives for the exported log, with no event twice. (The
// aggregator is not on the billing path; its kill test is in aggregate/worker.)
func TestSettleWorkerSurvivesSIGKILL(t *testing.T) {
	if testing.Short() {
		t.Skip("kills processes for a minute")
	}
	survive(t, setup(t), 150_000, nil)
}

// Chaos: the same run on a Kafka broker and a ClickHouse of the test's own, in turn killed
// (the broker by SIGKILL and SIGTERM, ClickHouse by SIGKILL) and started again while the roles
// run; roles that exit by themselves are restarted as a supervisor would. Afterwards the billing
// topic equals the replay of the export and `tally audit` accounts for every usage record.
func TestBillingSurvivesServiceRestarts(t *testing.T) {
	if testing.Short() {
		t.Skip("restarts a broker for two minutes")
	}
	b, ch := testinfra.StartBroker(t), testinfra.StartClickHouse(t)
	survive(t, setupOn(t, b.Brokers(), ch), 60_000, &faults{broker: b, clickhouse: ch})
}

// Scale-out: the same run on a three-node Kafka cluster (topics replicated to three, min.insync
// replicas 2, as `tally migrate --replication-factor 3 --min-insync-replicas 2` makes them), one
// node SIGKILLed at a time while the roles run, started again, and the next one killed only once
// the first is back in sync. Ingest answers 200 only for usage the cluster acknowledged: every
// event that got one is in ClickHouse once, and the billing topic equals the replay.
func TestBillingSurvivesBrokerKillsOnAThreeNodeCluster(t *testing.T) {
	if testing.Short() {
		t.Skip("kills cluster nodes for two minutes")
	}
	c := testinfra.StartCluster(t, 3)
	e := setupOn(t, c.Brokers(), nil)
	survive(t, e, 60_000, &faults{cluster: c})
}

// faults are the services a run may kill and restart besides the roles: a broker (or a node of
// a cluster) and ClickHouse.
type faults struct {
	broker     *testinfra.Broker
	cluster    *testinfra.Cluster
	clickhouse *testinfra.ClickHouseServer
}

// survive runs the two-month scenario on a virtual clock at speed, killing roles (and broker,
// when not nil) at random, and checks the billing topic against the replay of the export.
func survive(t *testing.T, e *env, speed float64, services *faults) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()

	// One virtual time line for this process and every worker process: 2026-08-01 → 2026-10-01
	// in about 40 seconds. No leader election (--leader-group ""): a restarted worker would wait
	// out its killed predecessor's session each time; TestStandbyTakesOverFromTheLeader covers it.
	v0 := at("2026-08-01T00:00:00+08:00")
	r0 := time.Now()
	now := func() time.Time { return v0.Add(time.Duration(float64(time.Since(r0)) * speed)) }
	spec := fmt.Sprintf("virtual=%s,real=%d,speed=%g", v0.Format(time.RFC3339), r0.UnixMilli(), speed)

	l := ledger.New(ledger.Config{Brokers: e.brokers, BillingTopic: e.billing, LedgerTopic: e.ledger,
		Balances: map[string]decimal.Decimal{"poor": decimal.NewFromInt(1)}, DefaultBalance: decimal.NewFromInt(1_000_000), Now: now}, discard())
	go func() { _ = l.Run(ctx) }()

	bin := testinfra.BuildTally(t, "../..")
	ingestAddr := testinfra.FreeAddr(t)
	startIngest := func() *exec.Cmd {
		cmd := exec.Command(bin, "ingest", "--kafka-brokers", strings.Join(e.brokers, ","), "--topic-usage", e.usage,
			"--http-addr", ingestAddr, "--admin-addr", "127.0.0.1:0", "--log-level", roleLogLevel("error"))
		cmd.Env = append(os.Environ(), "TALLY_VIRTUAL_CLOCK="+spec)
		cmd.Stderr = os.Stderr
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		return cmd
	}
	// post sends usage as a gateway does: again and again until ingest answers 200. The virtual
	// clock reaches the real present about 67 s in, after which Kafka refuses the record times
	// (an hour ahead at most): a run that falls that far behind fails here instead of looping.
	client := http.Client{Timeout: 5 * time.Second}
	var acceptedMu sync.Mutex
	accepted := map[string]bool{}  // usage ids ingest answered 200 for
	var longestRetry time.Duration // the longest one event waited for its 200, under acceptedMu
	post := func(id, body string) {
		began := time.Now()
		for ctx.Err() == nil {
			if now().After(time.Now()) {
				t.Errorf("the run fell behind its virtual clock, now ahead of real time: usage can no longer be ingested")
				cancel()
				return
			}
			resp, err := client.Post("http://"+ingestAddr+"/v1/events", "application/cloudevents+json", strings.NewReader(body))
			if err == nil {
				resp.Body.Close()
				if resp.StatusCode == http.StatusOK {
					acceptedMu.Lock()
					accepted[id] = true
					longestRetry = max(longestRetry, time.Since(began))
					acceptedMu.Unlock()
					return
				}
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	startSink := func() *exec.Cmd {
		cmd := exec.Command(bin, "sink", "--kafka-brokers", strings.Join(e.brokers, ","), "--topic-usage", e.usage, "--topic-usage-dlq", e.dlq,
			"--group", e.sinkGroup, "--clickhouse-http", e.chHTTP, "--clickhouse-database", e.db,
			"--batch-rows", "50", "--flush-interval", "50ms", "--session-timeout", "6s", "--admin-addr", "127.0.0.1:0", "--log-level", roleLogLevel("error"))
		cmd.Stderr = os.Stderr
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		return cmd
	}
	start := func() *exec.Cmd {
		cmd := exec.Command(bin, "settle", "--kafka-brokers", strings.Join(e.brokers, ","), "--topic-usage", e.usage, "--topic-accounts", e.accounts,
			"--topic-ledger", e.ledger, "--topic-billing", e.billing, "--topic-account-status", e.status, "--topic-settle-journal", e.journal,
			"--sink-group", e.sinkGroup, "--leader-group", "", "--clickhouse-http", e.chHTTP, "--clickhouse-database", e.db,
			"--grace", "1h", "--poll-interval", "20ms", "--admin-addr", "127.0.0.1:0", "--log-level", roleLogLevel("warn"))
		cmd.Env = append(os.Environ(), "TALLY_VIRTUAL_CLOCK="+spec)
		cmd.Stderr = os.Stderr
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		return cmd
	}

	// The traffic, in virtual time, in the background.
	traffic := make(chan struct{})
	go func() {
		defer close(traffic)
		produce := func(topic, key string, ev contract.Event) {
			testinfra.Produce(t, e.brokers, topic, []kafka.Message{{Key: []byte(key), Value: contract.MustEncode(ev), Time: ev.Time}})
		}
		produce(e.accounts, "acme", contract.Event{ID: "act-1", Source: "console", Type: contract.ActivatedType, Time: now().Truncate(time.Second),
			Data: contract.ActivationData{Account: "acme", Service: "image-tagging"}})
		for day := 0; day < 61; day++ {
			d := v0.AddDate(0, 0, day).Add(12 * time.Hour)
			for now().Before(d) {
				time.Sleep(2 * time.Millisecond)
			}
			for _, acct := range []string{"acme", "poor", "zed"} {
				id := fmt.Sprintf("%s-%d", acct, day)
				post(id, string(contract.MustEncode(contract.Event{ID: id, Source: "gw", Type: contract.UsageType, Time: d,
					Data: contract.UsageData{Account: acct, Service: "image-tagging", Calls: int64(20_000 + day*500)}})))
			}
			if day == 10 || day == 40 {
				// zed buys prepaid packs: the first covers days already past, the second reaches
				// back into August, which is settled by then (an adjustment). The settle worker
				// reads the calls they cover back from usage_events at each settlement.
				from, until := v0.AddDate(0, 0, 5), v0.AddDate(0, 0, 40)
				if day == 40 {
					from, until = v0.AddDate(0, 0, 20), v0.AddDate(0, 0, 50)
				}
				produce(e.accounts, "zed", contract.Event{ID: fmt.Sprintf("pack-%d", day), Source: "console", Type: contract.PackPurchasedType, Time: d,
					Data: contract.PackPurchaseData{Account: "zed", Service: "image-tagging", PackID: fmt.Sprintf("zed-p%d", day), Calls: 400_000,
						ValidFrom: cloudevent.FormatTime(from), ValidUntil: cloudevent.FormatTime(until)}})
			}
			if day == 35 {
				// Recharge once the failed hold has suspended the account (the settlement may
				// wait for a restarted sink); usage produced meanwhile keeps its older times
				// and is billed as late.
				deadline := time.Now().Add(60 * time.Second)
				for time.Now().Before(deadline) && !strings.Contains(strings.Join(e.billingLinesUntil(t, func([]string) bool { return true }), "\n"),
					"tally.account.suspended.v1:hold:poor:2026-09") {
					time.Sleep(200 * time.Millisecond)
				}
				produce(e.ledger, "poor", contract.Event{ID: "rc-poor", Source: "ledger", Type: contract.RechargedType, Time: d,
					Data: contract.RechargeData{Account: "poor", Amount: "10000.00"}})
				_ = l.Recharge(ctx, "poor", decimal.NewFromInt(10_000))
			}
		}
	}()

	r := rand.New(rand.NewPCG(9, 9))
	kills, selfExits, brokerRestarts, chRestarts := 0, 0, 0, 0
	ingestProc, sinkProc, settleProc := supervise(startIngest), supervise(startSink), supervise(start)
	keepUp := func() { // a supervisor restarts what exits, to the end of the run
		for _, p := range []**proc{&ingestProc, &sinkProc, &settleProc} {
			if (*p).exited() {
				*p = supervise((*p).start)
				selfExits++
			}
		}
	}
	// A restarted sink waits out its predecessor's session (6 s) before it consumes again: killed
	// more often than that it would never write, and the run would only measure that.
	sinkStarted, brokerStarted := time.Now(), time.Now()
	for {
		select {
		case <-traffic:
		default:
			time.Sleep(time.Duration(700+r.IntN(2500)) * time.Millisecond)
			keepUp()
			target := r.IntN(3)
			if services != nil && r.IntN(3) == 0 && time.Since(brokerStarted) > 12*time.Second {
				switch {
				case services.cluster != nil:
					target = 5
				case services.clickhouse == nil:
					target = 3
				default:
					target = 3 + (brokerRestarts+chRestarts)%2 // the broker and ClickHouse in turn
				}
			}
			if target == 1 && time.Since(sinkStarted) < 10*time.Second {
				target = 2
			}
			switch target {
			case 0:
				ingestProc.kill()
				ingestProc = supervise(startIngest)
			case 1:
				sinkProc.kill()
				sinkProc, sinkStarted = supervise(startSink), time.Now()
			case 2:
				settleProc.kill()
				settleProc = supervise(start)
			case 3:
				if brokerRestarts%2 == 0 {
					services.broker.Kill()
				} else {
					services.broker.Stop()
				}
				time.Sleep(time.Duration(r.IntN(3000)) * time.Millisecond)
				services.broker.Start()
				brokerRestarts++
				brokerStarted = time.Now()
				continue
			case 5:
				// One node down for a few seconds of traffic; the next is killed only after this
				// one has caught up, so two replicas of every partition always hold each write.
				node := services.cluster.Nodes[brokerRestarts%len(services.cluster.Nodes)]
				node.Kill()
				time.Sleep(time.Duration(2000+r.IntN(3000)) * time.Millisecond)
				node.Start()
				services.cluster.WaitInSync(2*time.Minute, e.usage, e.accounts, e.ledger, e.billing, e.status, e.journal, e.dlq)
				brokerRestarts++
				brokerStarted = time.Now()
				continue
			default:
				services.clickhouse.Kill()
				time.Sleep(time.Duration(r.IntN(3000)) * time.Millisecond)
				services.clickhouse.Start()
				chRestarts++
				brokerStarted = time.Now() // one service fault at a time, with room between
				continue
			}
			kills++
			continue
		}
		break
	}
	defer func() {
		for _, p := range []*proc{ingestProc, sinkProc, settleProc} {
			p.stop()
		}
	}()
	for !now().After(at("2026-10-01T03:00:00+08:00")) {
		keepUp()
		time.Sleep(50 * time.Millisecond)
	}
	e.billingLinesUntil(t, func(lines []string) bool { // wait for the last month's settlement …
		keepUp()
		return strings.Contains(strings.Join(lines, "\n"), `"id":"tally.bill.issued.v1:bill:zed:2026-09"`)
	})
	time.Sleep(2 * time.Second) // … and the rest of it
	got, billingCopies := distinctEvents(t, e.billingLinesUntil(t, func([]string) bool { return true }))
	journalCopies := journalledOnce(t, e)
	want := replayExport(t, e)
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Fatalf("after %d kills the billing topic differs from replay of the export\n--- billing topic\n%s\n--- replay\n%s", kills, strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	seen := map[string]bool{}
	for _, line := range got {
		id := line[strings.Index(line, `"id":"`)+6:]
		seen[id[:strings.Index(id, `"`)]] = true
	}
	for _, must := range []string{"tally.account.suspended.v1:hold:poor:2026-09", "tally.bill.issued.v1:bill:acme:2026-09"} {
		if !seen[must] {
			t.Errorf("missing %s", must)
		}
	}
	// zed's second pack re-priced August: September's bill adjusts it.
	zedSeptember := ""
	for _, line := range got {
		if strings.Contains(line, `"id":"tally.bill.issued.v1:bill:zed:2026-09"`) {
			zedSeptember = line
		}
	}
	if !strings.Contains(zedSeptember, `"adjustments":[{"period":"2026-08"`) {
		t.Errorf("zed's September bill adjusts no August line: %s", zedSeptember)
	}
	// Nothing ingest accepted is lost: each id it answered 200 for is in usage_events, once the
	// sink has written the tail (usage after the last settlement instant; a broker kill near the
	// end can leave it seconds behind).
	keepUp()
	testinfra.WaitForOffsets(t, e.conn, testinfra.EndOffsets(t, e.brokers, e.usage, 2), 2*time.Minute,
		"SELECT kafka_partition, max(next_offset) FROM sink_progress WHERE consumer = ? AND kafka_topic = ? GROUP BY kafka_partition", e.sinkGroup, e.usage)
	var stored uint64
	if err := e.conn.QueryRow(context.Background(), "SELECT uniqExact(id) FROM "+e.db+".usage_events").Scan(&stored); err != nil {
		t.Fatal(err)
	}
	if stored != uint64(len(accepted)) {
		t.Errorf("ingest accepted %d usage events; usage_events holds %d distinct ids", len(accepted), stored)
	}
	if services != nil {
		loc, _ := time.LoadLocation("Asia/Shanghai")
		audit, err := sink.Audit(context.Background(), e.conn, sink.AuditConfig{Brokers: e.brokers, Topic: e.usage, DLQTopic: e.dlq, Group: e.sinkGroup,
			Location: loc, Services: settle.DefaultCatalogue()})
		if err != nil {
			t.Fatal(err)
		}
		for _, p := range audit {
			if !p.Clean() || p.Pending != 0 {
				t.Errorf("audit of usage partition %d: %+v", p.Partition, p)
			}
		}
	}
	t.Logf("%d role kills, %d broker restarts, %d ClickHouse restarts, %d roles restarted after exiting by themselves; %d events, equal to the replay of the exported log; "+
		"write retries repeated %d billing events and %d journal records; the longest a gateway retried one event until ingest answered 200: %s (ingest restarts and broker losses)",
		kills, brokerRestarts, chRestarts, selfExits, len(got), billingCopies, journalCopies, longestRetry.Round(100*time.Millisecond))
}

// roleLogLevel is the log level of the role processes a test starts: def, or TALLY_TEST_ROLE_LOG
// when set (info or debug, to see what a failed run's roles did).
func roleLogLevel(def string) string {
	if v := os.Getenv("TALLY_TEST_ROLE_LOG"); v != "" {
		return v
	}
	return def
}

// proc is a role process under a supervisor: it can tell that it exited, be killed, be stopped.
type proc struct {
	start func() *exec.Cmd
	cmd   *exec.Cmd
	done  chan struct{}
}

func supervise(start func() *exec.Cmd) *proc {
	p := &proc{start: start, cmd: start(), done: make(chan struct{})}
	go func() { _ = p.cmd.Wait(); close(p.done) }()
	return p
}

func (p *proc) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

func (p *proc) kill() { _ = p.cmd.Process.Signal(syscall.SIGKILL); <-p.done }
func (p *proc) stop() { _ = p.cmd.Process.Signal(syscall.SIGTERM); <-p.done }

// adminMetric reads a role's metric from its admin address: an unlabelled sample, or the sum of
// a labelled family's; -1 when the address does not answer.
func adminMetric(admin, name string) float64 {
	resp, err := http.Get("http://" + admin + "/metrics")
	if err != nil {
		return -1
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	sum := 0.0
	for line := range strings.SplitSeq(string(body), "\n") {
		if strings.HasPrefix(line, name+" ") || strings.HasPrefix(line, name+"{") {
			v, _ := strconv.ParseFloat(line[strings.LastIndexByte(line, ' ')+1:], 64)
			sum += v
		}
	}
	return sum
}

// Two `tally settle` processes in one election: the leader settles October and is killed with
// SIGKILL; the standby takes over once the leader's session expires, acts on the ledger's reply
// to the hold, and the billing topic is still exactly the replay of the log, nothing twice.
func TestStandbyTakesOverFromAKilledLeader(t *testing.T) {
	if testing.Short() {
		t.Skip("waits out a Kafka session")
	}
	e := setup(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	e.startSink(t, ctx)
	bin := testinfra.BuildTally(t, "../..")
	// Virtual time from 2026-10-31 23:58 at 60×: October's usage is received at once, and with a
	// one-minute grace October settles about three seconds in.
	v0 := at("2026-10-31T23:58:00+08:00")
	r0 := time.Now()
	now := func() time.Time { return v0.Add(time.Since(r0) * 60) }
	spec := fmt.Sprintf("virtual=%s,real=%d,speed=60", v0.Format(time.RFC3339), r0.UnixMilli())
	group := testinfra.UniqueName(t, "leader")
	start := func() (*exec.Cmd, string) {
		admin := testinfra.FreeAddr(t)
		cmd := exec.Command(bin, "settle", "--kafka-brokers", strings.Join(e.brokers, ","), "--topic-usage", e.usage, "--topic-accounts", e.accounts,
			"--topic-ledger", e.ledger, "--topic-billing", e.billing, "--topic-account-status", e.status, "--topic-settle-journal", e.journal,
			"--sink-group", e.sinkGroup, "--leader-group", group, "--session-timeout", "6s", "--clickhouse-http", e.chHTTP,
			"--clickhouse-database", e.db, "--grace", "1m", "--poll-interval", "20ms", "--admin-addr", admin, "--log-level", "warn")
		cmd.Env = append(os.Environ(), "TALLY_VIRTUAL_CLOCK="+spec)
		cmd.Stderr = os.Stderr
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = cmd.Process.Signal(syscall.SIGTERM); _ = cmd.Wait() })
		return cmd, admin
	}
	leading := func(admin string) bool { return adminMetric(admin, "tally_settle_leading") == 1 }
	waitFor := func(what string, ok func() bool) {
		deadline := time.Now().Add(60 * time.Second)
		for !ok() {
			if time.Now().After(deadline) {
				t.Fatalf("timed out waiting for %s", what)
			}
			time.Sleep(100 * time.Millisecond)
		}
	}

	e.usageCall(t, "u1", "acme", "image-tagging", 600_000, "2026-10-20T10:00:00+08:00", now().Format(time.RFC3339Nano))
	a, aAdmin := start()
	b, bAdmin := start()
	if oct := e.billingLinesUntil(t, func(lines []string) bool { return strings.Contains(strings.Join(lines, "\n"), "bill:acme:2026-10") }); len(oct) == 0 {
		t.Fatal("October was not settled")
	}
	// Exactly one leads (the second one's joining may have moved the lease: either is fine).
	waitFor("exactly one leader", func() bool { return leading(aAdmin) != leading(bAdmin) })
	leader, standbyAdmin := a, bAdmin
	if leading(bAdmin) {
		leader, standbyAdmin = b, aAdmin
	}
	_ = leader.Process.Signal(syscall.SIGKILL)
	_ = leader.Wait()
	failedAt := now()
	testinfra.Produce(t, e.brokers, e.ledger, []kafka.Message{{Key: []byte("acme"), Time: failedAt, Value: contract.MustEncode(contract.Event{
		ID: "hf-1", Source: "ledger", Type: contract.HoldFailedType, Time: failedAt, Data: contract.HoldReplyData{Account: "acme", HoldID: "hold:acme:2026-11"}})}})
	waitFor("the standby to take over", func() bool { return leading(standbyAdmin) })
	e.billingLinesUntil(t, func(lines []string) bool {
		return strings.Contains(strings.Join(lines, "\n"), "tally.account.suspended.v1:hold:acme:2026-11")
	})
	time.Sleep(time.Second) // nothing more may follow
	got := e.billingLinesUntil(t, func([]string) bool { return true })
	journalledOnce(t, e)
	if want := replayExportWith(t, e, time.Minute); strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Fatalf("billing topic differs from replay of the export\n--- billing topic\n%s\n--- replay\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	if !strings.Contains(strings.Join(got, "\n"), "tally.account.suspended.v1:hold:acme:2026-11") {
		t.Fatalf("the new leader did not act on the ledger's reply:\n%s", strings.Join(got, "\n"))
	}
}

package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"text/tabwriter"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
	"github.com/segmentio/kafka-go"
	"github.com/shopspring/decimal"

	aggworker "github.com/tally-billing/tally/aggregate/worker"
	"github.com/tally-billing/tally/contract"
	"github.com/tally-billing/tally/ingest/sink"
	"github.com/tally-billing/tally/internal/chx"
	"github.com/tally-billing/tally/internal/cloudevent"
	"github.com/tally-billing/tally/internal/kafkax"
	"github.com/tally-billing/tally/settle"
	"github.com/tally-billing/tally/settle/worker"
)

func init() {
	register("demo", command{
		summary: "run the whole pipeline on a virtual clock over two months of traffic, print bills, check them against replay",
		run:     runDemo,
	})
}

// virtualClock runs speed times faster than the wall clock from start.
type virtualClock struct {
	start, real0 time.Time
	speed        float64
}

func (c *virtualClock) now() time.Time {
	return c.start.Add(time.Duration(float64(time.Since(c.real0)) * c.speed))
}

func (c *virtualClock) waitUntil(ctx context.Context, t time.Time) {
	for ctx.Err() == nil && c.now().Before(t) {
		time.Sleep(5 * time.Millisecond)
	}
}

func runDemo(ctx context.Context, env *environment, args []string) error {
	fs := newFlags("demo")
	kf := addKafkaFlags(fs)
	cf := addClickHouseFlags(fs)
	speed := fs.Float64("speed", 86400, "virtual seconds per real second (86400: a day a second)")
	logFile := fs.String("log", ".state/demo.log", "where the roles' logs go")
	if err := env.parse(fs, args); err != nil {
		return err
	}
	kc, err := kf.cluster()
	if err != nil {
		return err
	}
	out := env.stdout
	if err := kafkax.Ping(ctx, kc); err != nil {
		return fmt.Errorf("kafka is not running (%v): run `make up` first", err)
	}
	chcfg, err := cf.config()
	if err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(*logFile), 0o755); err != nil {
		return err
	}
	lf, err := os.Create(*logFile)
	if err != nil {
		return err
	}
	defer lf.Close()

	// Two whole months that ended before today (Kafka refuses record times in the future).
	loc, _ := time.LoadLocation("Asia/Shanghai")
	m1 := contract.PeriodOf(time.Now(), loc).Prev().Prev().Prev()
	m2 := m1.Next()
	clock := &virtualClock{start: m1.Start(loc), real0: time.Now(), speed: *speed}
	id := fmt.Sprintf("%d", time.Now().Unix())
	db := "demo_" + id
	topic := func(name string) string { return "demo." + id + "." + name }
	ch := []string{"--clickhouse-http", *cf.http, "--clickhouse-addr", *cf.addr, "--clickhouse-database", db}
	common := []string{"--kafka-brokers", *kf.brokers,
		"--topic-usage", topic("usage"), "--topic-usage-dlq", topic("usage.dlq"), "--topic-accounts", topic("accounts"), "--topic-ledger", topic("ledger"),
		"--topic-billing", topic("billing"), "--topic-account-status", topic("account-status"), "--topic-usage-totals", topic("usage-totals"),
		"--topic-settle-journal", topic("settle.journal"), "--log-level", "info"}
	roleEnv := &environment{stdin: env.stdin, stdout: lf, stderr: lf, lookupEnv: func(string) (string, bool) { return "", false }, now: clock.now}
	fmt.Fprintf(out, "Tally demo: %s and %s on a virtual clock (%.0f× real time); topics demo.%s.*, ClickHouse database %s; role logs in %s\n",
		m1, m2, *speed, id, db, *logFile)
	if err := runMigrate(ctx, roleEnv, append(append(common, ch...), "--partitions", "4", "--partitions-other", "2")); err != nil {
		return fmt.Errorf("migrate: %w", err)
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var wg sync.WaitGroup
	roleErr := make(chan error, 6)
	start := func(name string, run func(context.Context, *environment, []string) error, extra ...string) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := run(ctx, roleEnv, append(append([]string{}, common...), extra...)); err != nil && ctx.Err() == nil {
				roleErr <- fmt.Errorf("%s: %w", name, err)
			}
		}()
	}
	start("ingest", runIngest, "--http-addr", "127.0.0.1:18080", "--admin-addr", "127.0.0.1:19101")
	start("sink", runSink, append(ch, "--group", "demo-"+id+"-sink", "--flush-interval", "100ms", "--admin-addr", "127.0.0.1:19102")...)
	start("aggregate", runAggregate, append(ch, "--group", "demo-"+id+"-agg", "--api-addr", "127.0.0.1:18081", "--admin-addr", "127.0.0.1:19103")...)
	start("settle", runSettle, append(ch, "--sink-group", "demo-"+id+"-sink", "--leader-group", "demo-"+id+"-settle", "--grace", "1h", "--poll-interval", "50ms", "--admin-addr", "127.0.0.1:19104")...)
	start("billsink", runBillsink, append(ch, "--group", "demo-"+id+"-billsink", "--flush-interval", "100ms", "--admin-addr", "127.0.0.1:19106")...)
	start("ledger-example", runLedgerExample, "--balances", "initech=50", "--ledger-addr", "127.0.0.1:18082", "--ledger-admin-addr", "127.0.0.1:19105")
	defer func() { cancel(); wg.Wait() }()
	time.Sleep(2 * time.Second)
	select {
	case err := <-roleErr:
		return err
	default:
	}

	d := &demoDriver{ctx: ctx, clock: clock, loc: loc, out: out, rng: rand.New(rand.NewPCG(1, 2))}
	if err := d.script(m1, m2); err != nil {
		return err
	}
	select {
	case err := <-roleErr:
		return err
	default:
	}
	// Wait for the second month's settlement.
	fmt.Fprintf(out, "waiting for the settlement of %s …\n", m2)
	deadline := time.Now().Add(2 * time.Minute)
	var events []billingEvent
	for time.Now().Before(deadline) {
		if events, err = readBilling(ctx, kc, topic("billing")); err == nil && hasBill(events, m2) {
			break
		}
		time.Sleep(500 * time.Millisecond)
	}
	if !hasBill(events, m2) {
		return errors.New("the second month was not settled in time; see " + *logFile)
	}
	time.Sleep(time.Second)
	events, err = readBilling(ctx, kc, topic("billing"))
	if err != nil {
		return err
	}
	printBilling(out, events)
	if err := printUsage(ctx, out, "http://127.0.0.1:18081", []string{"acme", "globex", "initech", "umbrella"}, m1); err != nil {
		return err
	}
	fmt.Fprintf(out, "\nOne account as an operator sees it (tally accounts show --account initech --period %s --query-url http://127.0.0.1:18081)\n\n", m1)
	if err := showAccount(ctx, out, &http.Client{Timeout: 10 * time.Second}, "http://127.0.0.1:18081", "", "initech", m1.String(), false); err != nil {
		return err
	}

	// The same log, replayed offline, must give the same events.
	chcfg.Database = db
	conn, err := chx.Open(ctx, chcfg)
	if err != nil {
		return err
	}
	defer conn.Close()
	var log bytes.Buffer
	n, err := worker.Export(ctx, kc, topic("settle.journal"), conn, &log)
	if err != nil {
		return err
	}
	var replayed, rejected bytes.Buffer
	cfg := settle.Config{Catalogue: settle.DefaultCatalogue(), Location: loc, HoldRatio: decimalOne()}
	if _, err := settle.Replay(&log, &replayed, &rejected, cfg, settle.ReplayOptions{Grace: time.Hour}); err != nil {
		return err
	}
	if same, why := sameByAccount(events, replayed.String()); !same {
		return fmt.Errorf("the pipeline's billing events differ from `tally replay` over the exported log: %s", why)
	}
	fmt.Fprintf(out, "\n✓ the billing topic (%d events) is byte-identical, account by account, to `tally replay --grace 1h` over the exported log (%d lines)\n", len(events), n)

	// And nothing the gateways sent was lost on the way: every usage offset is a row or a dead letter.
	audit, err := sink.Audit(ctx, conn, sink.AuditConfig{Brokers: kc.Brokers, Security: kc.Security, Topic: topic("usage"), DLQTopic: topic("usage.dlq"), Group: "demo-" + id + "-sink",
		Location: loc, Services: settle.DefaultCatalogue()})
	if err != nil {
		return err
	}
	var rows, retries, dead int64
	for _, p := range audit {
		if !p.Clean() {
			return fmt.Errorf("audit: partition %d of the usage topic has offsets not accounted for exactly once: %+v", p.Partition, p)
		}
		rows, retries, dead = rows+p.Rows, retries+p.Retries, dead+p.DeadLetters
	}
	fmt.Fprintf(out, "✓ `tally audit`: every one of the usage topic's %d records is a usage row (%d), a gateway retry of one (%d) or a dead letter (%d), exactly once\n",
		rows+retries+dead, rows, retries, dead)
	return printRevenue(ctx, out, conn, kc, topic("billing"), "demo-"+id+"-billsink", events)
}

// printRevenue waits for the billsink to have copied the whole billing topic, prints the
// README's revenue query over bill_lines, and checks that the bills table adds up to the bills
// on the topic.
func printRevenue(ctx context.Context, out io.Writer, conn driver.Conn, kc kafkax.Cluster, topic, group string, events []billingEvent) error {
	ends, err := kafkax.EndOffsets(ctx, kc, topic)
	if err != nil {
		return err
	}
	for deadline := time.Now().Add(time.Minute); ; {
		behind := 0
		for p, end := range ends {
			if next, err := sink.Progress(ctx, conn, group, topic, p); err != nil || next < end {
				behind++
			}
		}
		if behind == 0 {
			break
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("the billsink has not copied the billing topic after a minute (%d partitions behind)", behind)
		}
		time.Sleep(200 * time.Millisecond)
	}
	rows, err := conn.Query(ctx, "SELECT period, service, count(), sum(amount) FROM bill_lines FINAL GROUP BY period, service ORDER BY period, service")
	if err != nil {
		return err
	}
	defer rows.Close()
	fmt.Fprintf(out, "\nRevenue per month and service, in SQL (SELECT period, service, count(), sum(amount) FROM bill_lines FINAL GROUP BY period, service)\n\n")
	fmt.Fprintf(out, "  %-8s %-26s %6s %12s\n", "period", "service", "bills", "amount")
	for rows.Next() {
		var period uint32
		var service string
		var n uint64
		var amount decimal.Decimal
		if err := rows.Scan(&period, &service, &n, &amount); err != nil {
			return err
		}
		fmt.Fprintf(out, "  %-8d %-26s %6d %12s\n", period, service, n, amount.StringFixed(2))
	}
	if err := rows.Err(); err != nil {
		return err
	}
	onTopic := decimal.Zero
	for _, e := range events {
		if e.Type == contract.BillIssuedType {
			var b contract.Bill
			if err := json.Unmarshal(e.Data, &b); err != nil {
				return err
			}
			onTopic = onTopic.Add(decimal.RequireFromString(b.Total))
		}
	}
	var inTable decimal.Decimal
	if err := conn.QueryRow(ctx, "SELECT sum(total) FROM bills FINAL").Scan(&inTable); err != nil {
		return err
	}
	if !inTable.Equal(onTopic) {
		return fmt.Errorf("the bills table totals %s, the bills on the billing topic %s", inTable.StringFixed(2), onTopic.StringFixed(2))
	}
	fmt.Fprintf(out, "\n✓ `tally billsink`: the bills table totals %s, to the cent what the bills on the billing topic total\n", inTable.StringFixed(2))
	return nil
}

type demoDriver struct {
	ctx   context.Context
	clock *virtualClock
	loc   *time.Location
	out   interface{ Write([]byte) (int, error) }
	rng   *rand.Rand
	sent  int
	http  http.Client
}

// console changes an account's terms through the accounts API, as a platform's console would:
// data's fields (its account aside) and the change's id; an activation takes effect at at, the
// other changes when ingest receives them.
func (d *demoDriver) console(typ, id string, at time.Time, data any) error {
	raw, err := json.Marshal(data)
	if err != nil {
		return err
	}
	var fields map[string]any
	if err := json.Unmarshal(raw, &fields); err != nil {
		return err
	}
	account, _ := fields["account"].(string)
	delete(fields, "account")
	fields["id"] = id
	kind := map[string]string{contract.ActivatedType: "activations", contract.PackPurchasedType: "packs", contract.PriceOverrideType: "price-overrides"}[typ]
	if typ == contract.ActivatedType {
		fields["at"] = cloudevent.FormatTime(at)
	}
	if _, err := postChange(d.ctx, &d.http, "http://127.0.0.1:18080", "", account, kind, fields); err != nil {
		return fmt.Errorf("%s %s: %w", kind, id, err)
	}
	return nil
}

// usage posts one batch of usage events through the ingest API, as a gateway would.
func (d *demoDriver) usage(events []string) error {
	body := "[" + strings.Join(events, ",") + "]"
	resp, err := d.http.Post("http://127.0.0.1:18080/v1/events", "application/cloudevents-batch+json", strings.NewReader(body))
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		var r struct{ Error string }
		_ = json.NewDecoder(resp.Body).Decode(&r)
		return fmt.Errorf("ingest answered %d: %s", resp.StatusCode, r.Error)
	}
	d.sent += len(events)
	return nil
}

func usageEvent(id, account, service string, calls int64, at time.Time) string {
	return string(contract.MustEncode(contract.Event{ID: id, Source: "gw-demo", Type: contract.UsageType, Time: at,
		Data: contract.UsageData{Account: account, Service: service, Calls: calls}}))
}

// script is two months of four accounts over all eight services: acme just under 3M image-tagging
// calls (a late batch lifts it into tier 3), globex with the free-beta service and a mid-month
// activation, initech on a prepaid pack and too poor for its hold (it recharges later), umbrella
// on a contract price; every seventh day a gateway resends its whole batch.
func (d *demoDriver) script(m1, m2 period) error {
	loc := d.loc
	day0 := m1.Start(loc)
	setup := func() error {
		for _, c := range [][3]string{{"acme", "image-tagging"}, {"acme", "vehicle-recognition"}, {"globex", "image-tagging"}, {"initech", "product-recognition"}} {
			if err := d.console(contract.ActivatedType, "act-"+c[0]+"-"+c[1], d.clock.now(), contract.ActivationData{Account: c[0], Service: c[1]}); err != nil {
				return err
			}
		}
		if err := d.console(contract.PackPurchasedType, "pack-initech-1", d.clock.now(), contract.PackPurchaseData{Account: "initech", Service: "product-recognition", PackID: "initech-p1", Calls: 200000,
			ValidFrom: day0.AddDate(0, 0, 4).Format(time.RFC3339), ValidUntil: day0.AddDate(0, 0, 19).Format(time.RFC3339)}); err != nil {
			return err
		}
		return d.console(contract.PriceOverrideType, "po-umbrella-1", d.clock.now(), contract.PriceOverrideData{Account: "umbrella", Service: "celebrity-recognition",
			EffectiveFrom: day0.Format(time.RFC3339), Tiers: []contract.TierData{{FromCalls: 0, UnitPrice: "1.0"}}})
	}
	d.clock.waitUntil(d.ctx, day0.Add(time.Hour))
	days1 := int(m2.Start(loc).Sub(day0).Hours()/24 + 0.5)
	end := m2.Next().Start(loc).Add(90 * time.Minute)
	if err := setup(); err != nil {
		return err
	}
	for day := 0; ; day++ {
		t := day0.AddDate(0, 0, day).Add(12 * time.Hour)
		if !t.Before(m2.Next().Start(loc)) {
			break
		}
		d.clock.waitUntil(d.ctx, t)
		if d.ctx.Err() != nil {
			return d.ctx.Err()
		}
		var evs []string
		add := func(account, service string, calls int64) {
			evs = append(evs, usageEvent(fmt.Sprintf("%s-%s-%d", account, service, day), account, service, calls, d.clock.now().Add(-time.Minute)))
		}
		inM1 := t.Before(m2.Start(loc))
		if inM1 {
			acme := int64(2_990_000 / days1)
			if day == 0 {
				acme += 2_990_000 % int64(days1)
			}
			add("acme", "image-tagging", acme)
		} else {
			add("acme", "image-tagging", 40_000)
		}
		add("acme", "vehicle-recognition", 1_500)
		add("globex", "image-tagging", 30_000)
		add("globex", "image-enhancement", 700)
		if day >= 9 {
			add("globex", "vehicle-recognition", 2_000)
		}
		add("initech", "product-recognition", 12_000)
		add("umbrella", "celebrity-recognition", 8_000)
		add("umbrella", "smart-cropping", 3_000)
		add("globex", "image-quality", 1_200)
		add("acme", "product-recognition-wechat", 900)
		if err := d.usage(evs); err != nil {
			return err
		}
		if day%7 == 3 { // a gateway retry of the whole batch: counted once
			if err := d.usage(evs); err != nil {
				return err
			}
		}
		if day == 14 {
			if err := d.console(contract.ActivatedType, "act-globex-vehicle", d.clock.now(), contract.ActivationData{Account: "globex", Service: "vehicle-recognition"}); err != nil {
				return err
			}
		}
		if t.After(m2.Start(loc)) && t.Before(m2.Start(loc).AddDate(0, 0, 1)) {
			// Late: calls of the last evening of the first month, arriving after its settlement.
			late := usageEvent("acme-late-1", "acme", "image-tagging", 20_000, m2.Start(loc).Add(-2*time.Hour))
			if err := d.usage([]string{late}); err != nil {
				return err
			}
			fmt.Fprintf(d.out, "  %s: a late batch of 20,000 %s calls of acme arrives\n", t.Format("2006-01-02"), m1)
		}
		if t.After(m2.Start(loc).AddDate(0, 0, 4)) && t.Before(m2.Start(loc).AddDate(0, 0, 5)) {
			req, _ := http.NewRequestWithContext(d.ctx, http.MethodPost, "http://127.0.0.1:18082/v1/accounts/initech/recharge", strings.NewReader(`{"amount":"5000.00"}`))
			if resp, err := d.http.Do(req); err == nil {
				resp.Body.Close()
			}
			fmt.Fprintf(d.out, "  %s: initech recharges 5000.00 at the ledger\n", t.Format("2006-01-02"))
		}
		if day%5 == 0 {
			fmt.Fprintf(d.out, "  %s: %d usage events sent through the ingest API\n", t.Format("2006-01-02"), d.sent)
		}
	}
	d.clock.waitUntil(d.ctx, end)
	return nil
}

type period = contract.Period

type billingEvent struct {
	raw     string
	ID      string          `json:"id"`
	Type    string          `json:"type"`
	Subject string          `json:"subject"`
	Time    string          `json:"time"`
	Data    json.RawMessage `json:"data"`
}

func readBilling(ctx context.Context, kc kafkax.Cluster, topic string) ([]billingEvent, error) {
	var out []billingEvent
	err := kafkax.ReadAll(ctx, kc, topic, func(m kafka.Message) error {
		var e billingEvent
		if err := json.Unmarshal(m.Value, &e); err != nil {
			return err
		}
		e.raw = string(m.Value)
		out = append(out, e)
		return nil
	})
	return out, err
}

func hasBill(events []billingEvent, p period) bool {
	for _, e := range events {
		if e.Type == contract.BillIssuedType && strings.HasSuffix(e.ID, ":"+p.String()) {
			return true
		}
	}
	return false
}

// sameByAccount compares the billing topic with replay output, per account (the topic keeps each
// account's events in order; across accounts partitions interleave freely).
func sameByAccount(events []billingEvent, replayed string) (bool, string) {
	got := map[string][]string{}
	for _, e := range events {
		got[e.Subject] = append(got[e.Subject], e.raw)
	}
	want := map[string][]string{}
	for _, l := range strings.Split(strings.TrimSpace(replayed), "\n") {
		var e billingEvent
		if json.Unmarshal([]byte(l), &e) == nil {
			want[e.Subject] = append(want[e.Subject], l)
		}
	}
	if len(got) != len(want) {
		return false, fmt.Sprintf("%d accounts in the topic, %d in the replay", len(got), len(want))
	}
	for a, g := range got {
		if strings.Join(g, "\n") != strings.Join(want[a], "\n") {
			return false, "account " + a
		}
	}
	return true, ""
}

func printBilling(out interface{ Write([]byte) (int, error) }, events []billingEvent) {
	sort.SliceStable(events, func(i, j int) bool { return events[i].Subject < events[j].Subject })
	fmt.Fprintln(out, "\nBills")
	w := tabwriter.NewWriter(out, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(w, "account\tperiod\tservice\tcalls\tfree\tprepaid\tbillable\ttier\tunit\tamount\t")
	for _, e := range events {
		if e.Type != contract.BillIssuedType {
			continue
		}
		var b contract.Bill
		_ = json.Unmarshal(e.Data, &b)
		for _, l := range b.Lines {
			fmt.Fprintf(w, "%s\t%s\t%s\t%d\t%d\t%d\t%d\t%d\t%s\t%s\t\n", b.Account, b.Period, l.Service, l.Calls, l.FreeCalls, l.PrepaidCalls, l.BillableCalls, l.Tier, l.UnitPrice, l.Amount)
		}
		for _, a := range b.Adjustments {
			fmt.Fprintf(w, "%s\t%s\tadjusts %s %s\t%d→%d\t\t\t\t\t\t%s\t\n", b.Account, b.Period, a.Period, a.Service, a.CallsBefore, a.CallsAfter, a.Amount)
		}
		fmt.Fprintf(w, "%s\t%s\ttotal\t\t\t\t\t\t\t%s %s\t\n", b.Account, b.Period, b.Total, b.Currency)
	}
	_ = w.Flush()
	fmt.Fprintln(out, "\nHolds and account status")
	w = tabwriter.NewWriter(out, 0, 0, 2, ' ', 0)
	fmt.Fprintln(w, "time\taccount\tevent\tdetail")
	for _, e := range events {
		switch e.Type {
		case contract.HoldRequestedType, contract.HoldReleasedType, contract.AccountSuspendedType, contract.AccountResumedType:
			var d map[string]string
			_ = json.Unmarshal(e.Data, &d)
			detail := d["amount"]
			if d["reason"] != "" {
				detail = d["reason"]
			}
			fmt.Fprintf(w, "%s\t%s\t%s\t%s %s\n", e.Time, e.Subject, strings.TrimSuffix(strings.TrimPrefix(e.Type, "tally."), ".v1"), d["hold_id"], detail)
		}
	}
	_ = w.Flush()
}

func decimalOne() decimal.Decimal { return decimal.NewFromInt(1) }

// printUsage shows what the usage API says of a month: the running totals priced as the bill
// prices them (late calls and prepaid packs included).
func printUsage(ctx context.Context, out io.Writer, api string, accounts []string, p period) error {
	fmt.Fprintf(out, "\nUsage API, %s (GET /v1/accounts/{account}/usage?period=%s)\n", p, p)
	w := tabwriter.NewWriter(out, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(w, "account\tservice\tcalls\tfree left\tprepaid\tprepaid left\ttier\tunit\tamount so far\t")
	client := http.Client{Timeout: 10 * time.Second}
	for _, a := range accounts {
		var u aggworker.UsageResponse
		if _, err := getJSON(ctx, &client, api+"/v1/accounts/"+a+"/usage?period="+p.String(), "", &u); err != nil {
			return err
		}
		for _, s := range u.Services {
			fmt.Fprintf(w, "%s\t%s\t%d\t%d\t%d\t%d\t%d\t%s\t%s\t\n", a, s.Service, s.Calls, s.FreeCallsLeft, s.PrepaidCalls, s.PrepaidCallsLeft, s.Tier, s.UnitPrice, s.AmountSoFar)
		}
	}
	return w.Flush()
}

package settle

import (
	"bytes"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/shopspring/decimal"

	"github.com/tally-billing/tally/contract"
	"github.com/tally-billing/tally/internal/cloudevent"
)

// logBuilder writes an event log the way a gateway, console or ledger would: CloudEvents JSON
// lines, so tests exercise the real decoders.
type logBuilder struct {
	buf bytes.Buffer
	n   int
}

// ev appends one event; recordedAt "" means "same as time".
func (b *logBuilder) ev(typ, id, at, recordedAt string, data map[string]any) *logBuilder {
	b.n++
	if id == "" {
		id = fmt.Sprintf("ev-%d", b.n)
	}
	m := map[string]any{"specversion": "1.0", "id": id, "source": "test", "type": typ, "time": at, "data": data}
	if recordedAt != "" {
		m["recordedat"] = recordedAt
	}
	raw, err := json.Marshal(m)
	if err != nil {
		panic(err)
	}
	b.buf.Write(raw)
	b.buf.WriteByte('\n')
	return b
}

func (b *logBuilder) usage(id, account, service string, calls int64, at string) *logBuilder {
	return b.ev("tally.usage.v1", id, at, "", map[string]any{"account": account, "service": service, "calls": calls})
}

func (b *logBuilder) lateUsage(id, account, service string, calls int64, at, recordedAt string) *logBuilder {
	return b.ev("tally.usage.v1", id, at, recordedAt, map[string]any{"account": account, "service": service, "calls": calls})
}

func (b *logBuilder) activate(account, service, at string) *logBuilder {
	return b.ev(contract.ActivatedType, "", at, "", map[string]any{"account": account, "service": service})
}

func (b *logBuilder) pack(account, service, packID string, calls int64, from, until, at string) *logBuilder {
	return b.ev(contract.PackPurchasedType, "", at, "", map[string]any{"account": account, "service": service, "pack_id": packID,
		"calls": calls, "valid_from": from, "valid_until": until})
}

func (b *logBuilder) override(account, service, from, at string, tiers ...any) *logBuilder {
	var ts []map[string]any
	for i := 0; i < len(tiers); i += 2 {
		ts = append(ts, map[string]any{"from_calls": tiers[i], "unit_price": tiers[i+1]})
	}
	return b.ev(contract.PriceOverrideType, "", at, "", map[string]any{"account": account, "service": service, "effective_from": from, "tiers": ts})
}

func (b *logBuilder) holdReply(placed bool, account, holdID, at string) *logBuilder {
	typ := contract.HoldFailedType
	if placed {
		typ = contract.HoldPlacedType
	}
	return b.ev(typ, "", at, "", map[string]any{"account": account, "hold_id": holdID})
}

func (b *logBuilder) recharge(account, amount, at string) *logBuilder {
	return b.ev(contract.RechargedType, "", at, "", map[string]any{"account": account, "amount": amount})
}

func (b *logBuilder) String() string { return b.buf.String() }

// emitted is one decoded output event.
type emitted struct {
	ID   string          `json:"id"`
	Type string          `json:"type"`
	Time string          `json:"time"`
	Data json.RawMessage `json:"data"`
}

func defaultConfig() Config {
	loc, err := time.LoadLocation("Asia/Shanghai")
	if err != nil {
		panic(err)
	}
	return Config{Catalogue: DefaultCatalogue(), Location: loc, HoldRatio: decimal.NewFromInt(1)}
}

// replayLog replays a log with the default config and returns the raw output, the decoded
// events and the rejections.
func replayLog(t *testing.T, log string, opts ReplayOptions) (string, []emitted, string) {
	t.Helper()
	return replayLogWith(t, defaultConfig(), log, opts)
}

func replayLogWith(t *testing.T, cfg Config, log string, opts ReplayOptions) (string, []emitted, string) {
	t.Helper()
	var out, rej bytes.Buffer
	if _, err := Replay(strings.NewReader(log), &out, &rej, cfg, opts); err != nil {
		t.Fatalf("replay: %v", err)
	}
	var evs []emitted
	for _, line := range strings.Split(strings.TrimSpace(out.String()), "\n") {
		if line == "" {
			continue
		}
		var e emitted
		if err := json.Unmarshal([]byte(line), &e); err != nil {
			t.Fatalf("output line %q: %v", line, err)
		}
		evs = append(evs, e)
	}
	return out.String(), evs, rej.String()
}

func until(s string) ReplayOptions {
	t, err := time.Parse(time.RFC3339, s)
	if err != nil {
		panic(err)
	}
	return ReplayOptions{Until: t}
}

// bills picks the bills out of the emitted events, by bill id.
func bills(t *testing.T, evs []emitted) map[string]contract.Bill {
	t.Helper()
	out := map[string]contract.Bill{}
	for _, e := range evs {
		if e.Type != contract.BillIssuedType {
			continue
		}
		var b contract.Bill
		if err := json.Unmarshal(e.Data, &b); err != nil {
			t.Fatal(err)
		}
		out[b.BillID] = b
	}
	return out
}

func types(evs []emitted) []string {
	var out []string
	for _, e := range evs {
		out = append(out, e.ID)
	}
	return out
}

func mustTime(s string) time.Time {
	t, err := time.Parse(time.RFC3339, s)
	if err != nil {
		panic(err)
	}
	return t
}

// CloudOut is the emitted envelope type, named for brevity in tests.
type CloudOut = cloudevent.Out

func usageOf(id, account, service string, calls int64, at time.Time) contract.Usage {
	return contract.Usage{ID: id, Account: account, Service: service, Calls: calls, Time: at}
}

func mustDecimal(s string) decimal.Decimal { return decimal.RequireFromString(s) }

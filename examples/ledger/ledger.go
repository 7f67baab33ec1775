// Package ledger is an EXAMPLE of the downstream side of Tally, for demos and tests: a toy
// ledger that keeps balances in memory, deducts bills, answers hold requests (failing them when
// the balance cannot cover them) and takes recharges. A real ledger is a system of record with its
// own storage; this one only shows the contract: it reads the billing topic and answers on the
// ledger topic, deduplicating by event id.
package ledger

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"sort"
	"sync"
	"time"

	"github.com/segmentio/kafka-go"
	"github.com/shopspring/decimal"

	"github.com/tally-billing/tally/contract"
	"github.com/tally-billing/tally/internal/cloudevent"
	"github.com/tally-billing/tally/internal/kafkax"
)

// Config of the example ledger.
type Config struct {
	Brokers []string
	// Security is how connections to Kafka are made (SASL, TLS); zero: plaintext.
	Security                  kafkax.Security
	BillingTopic, LedgerTopic string
	// Balances are the opening balances; other accounts open with DefaultBalance.
	Balances       map[string]decimal.Decimal
	DefaultBalance decimal.Decimal
	Now            func() time.Time
}

// Ledger is the example ledger.
type Ledger struct {
	cfg  Config
	log  *slog.Logger
	out  *kafka.Writer
	mu   sync.Mutex
	bal  map[string]decimal.Decimal
	held map[string]hold // by hold id, placed holds only
	seen map[string]bool // event ids already applied
}

type hold struct {
	account string
	amount  decimal.Decimal
}

// New builds the ledger.
func New(cfg Config, log *slog.Logger) *Ledger {
	bal := map[string]decimal.Decimal{}
	for a, b := range cfg.Balances {
		bal[a] = b
	}
	return &Ledger{cfg: cfg, log: log, bal: bal, held: map[string]hold{}, seen: map[string]bool{},
		out: &kafka.Writer{Addr: kafka.TCP(cfg.Brokers...), Transport: cfg.Security.RoundTripper(), Topic: cfg.LedgerTopic, Balancer: &kafka.Murmur2Balancer{}, RequiredAcks: kafka.RequireAll, BatchTimeout: time.Millisecond}}
}

func (l *Ledger) balance(account string) decimal.Decimal {
	if b, ok := l.bal[account]; ok {
		return b
	}
	return l.cfg.DefaultBalance
}

// available is the balance less the holds placed on it.
func (l *Ledger) available(account string) decimal.Decimal {
	a := l.balance(account)
	for _, h := range l.held {
		if h.account == account {
			a = a.Sub(h.amount)
		}
	}
	return a
}

// Run reads the billing topic (every partition, from the start) and answers until ctx ends.
func (l *Ledger) Run(ctx context.Context) error {
	defer l.out.Close()
	var mu sync.Mutex
	var failed error
	err := kafkax.Follow(ctx, kafkax.FollowConfig{Brokers: l.cfg.Brokers, Security: l.cfg.Security, Topic: l.cfg.BillingTopic, Log: l.log}, func(m kafka.Message) {
		if err := l.apply(ctx, m.Value); err != nil && ctx.Err() == nil {
			mu.Lock()
			failed = errors.Join(failed, err)
			mu.Unlock()
			l.log.Error("example ledger: answering failed", "err", err)
		}
	})
	return errors.Join(err, failed)
}

func (l *Ledger) apply(ctx context.Context, raw []byte) error {
	var ev struct {
		ID   string          `json:"id"`
		Type string          `json:"type"`
		Data json.RawMessage `json:"data"`
	}
	if err := json.Unmarshal(raw, &ev); err != nil {
		return nil
	}
	l.mu.Lock()
	if l.seen[ev.ID] {
		l.mu.Unlock()
		return nil
	}
	l.seen[ev.ID] = true
	var reply []byte
	switch ev.Type {
	case contract.BillIssuedType:
		var b contract.Bill
		if json.Unmarshal(ev.Data, &b) == nil {
			l.bal[b.Account] = l.balance(b.Account).Sub(decimal.RequireFromString(b.Total))
		}
	case contract.HoldReleasedType:
		var h contract.HoldReleased
		if json.Unmarshal(ev.Data, &h) == nil {
			delete(l.held, h.HoldID)
		}
	case contract.HoldRequestedType:
		var h contract.HoldRequested
		if json.Unmarshal(ev.Data, &h) == nil {
			amount := decimal.RequireFromString(h.Amount)
			typ, reason := contract.HoldPlacedType, ""
			if l.available(h.Account).LessThan(amount) {
				typ, reason = contract.HoldFailedType, "insufficient balance"
			} else {
				l.held[h.HoldID] = hold{account: h.Account, amount: amount}
			}
			reply = l.event(typ, "ledger:"+ev.ID, h.Account, map[string]string{"account": h.Account, "hold_id": h.HoldID, "reason": reason})
		}
	}
	l.mu.Unlock()
	if reply == nil {
		return nil
	}
	var acct struct{ Subject string }
	_ = json.Unmarshal(reply, &acct)
	return l.out.WriteMessages(ctx, kafka.Message{Key: []byte(acct.Subject), Value: reply, Headers: kafkax.CloudEventHeaders()})
}

func (l *Ledger) event(typ, id, account string, data any) []byte {
	raw, _ := json.Marshal(cloudevent.NewOut("tally-ledger-example", typ, id, account, cloudevent.FormatTime(l.cfg.Now().UTC()), data))
	return raw
}

// Recharge tops an account up and tells Tally.
func (l *Ledger) Recharge(ctx context.Context, account string, amount decimal.Decimal) error {
	if !amount.IsPositive() {
		return errors.New("amount must be positive")
	}
	l.mu.Lock()
	l.bal[account] = l.balance(account).Add(amount)
	id := fmt.Sprintf("recharge:%s:%d", account, l.cfg.Now().UnixNano())
	raw := l.event(contract.RechargedType, id, account, map[string]string{"account": account, "amount": amount.StringFixed(2)})
	l.mu.Unlock()
	return l.out.WriteMessages(ctx, kafka.Message{Key: []byte(account), Value: raw, Headers: kafkax.CloudEventHeaders()})
}

// Handler serves POST /v1/accounts/{account}/recharge {"amount":"100.00"} and GET /v1/balances.
func (l *Ledger) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("POST /v1/accounts/{account}/recharge", func(w http.ResponseWriter, r *http.Request) {
		var body struct{ Amount string }
		if err := json.NewDecoder(r.Body).Decode(&body); err != nil {
			http.Error(w, `send {"amount":"100.00"}`, http.StatusBadRequest)
			return
		}
		amount, err := decimal.NewFromString(body.Amount)
		if err != nil {
			http.Error(w, "amount must be a decimal string", http.StatusBadRequest)
			return
		}
		if err := l.Recharge(r.Context(), r.PathValue("account"), amount); err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		w.WriteHeader(http.StatusAccepted)
	})
	mux.HandleFunc("GET /v1/balances", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(l.Balances())
	})
	return mux
}

// Balance is an account's balance and what holds reserve of it.
type Balance struct {
	Account string `json:"account"`
	Balance string `json:"balance"`
	Held    string `json:"held"`
}

// Balances lists the accounts the ledger knows.
func (l *Ledger) Balances() []Balance {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []Balance
	for a := range l.bal {
		held := l.balance(a).Sub(l.available(a))
		out = append(out, Balance{Account: a, Balance: l.balance(a).StringFixed(2), Held: held.StringFixed(2)})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Account < out[j].Account })
	return out
}

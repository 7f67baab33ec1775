package ingest

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/tally-billing/tally/contract"
	"github.com/tally-billing/tally/internal/apikey"
	"github.com/tally-billing/tally/internal/cloudevent"
	"github.com/tally-billing/tally/internal/problem"
	"github.com/tally-billing/tally/settle"
)

// AccountsConfig configures the accounts API.
type AccountsConfig struct {
	// Keys as for usage; a key needs Console to change terms. None: loopback clients only.
	Keys *apikey.Keyring
	// PublishTimeout bounds the wait for Kafka's acknowledgement.
	PublishTimeout time.Duration
	// Registry, when set, gets the API's metrics.
	Registry prometheus.Registerer
}

// AccountsAPI is the console's way to change an account's terms: activate a service, sell a
// prepaid pack, record contract prices. Each request becomes one CloudEvent on the accounts
// topic, keyed by the account, answered 201 only once Kafka acknowledged it. What it accepts,
// billing applies: the event it would publish is first read by settle.DecodeLine, the settle
// worker's own reading of the topic, and refused with that reason if billing would refuse it.
// The client's id is the event's id, so a retry of the same request changes nothing.
type AccountsAPI struct {
	cfg       AccountsConfig
	catalogue *settle.Catalogue
	pub       Publisher
	log       *slog.Logger
	now       func() time.Time
	answers   *prometheus.CounterVec
}

// NewAccountsAPI builds the API; pub writes to the accounts topic.
func NewAccountsAPI(cfg AccountsConfig, catalogue *settle.Catalogue, pub Publisher, log *slog.Logger, now func() time.Time) (*AccountsAPI, error) {
	if cfg.PublishTimeout <= 0 {
		return nil, errors.New("accounts API: the publish timeout must be positive")
	}
	answers := prometheus.NewCounterVec(prometheus.CounterOpts{Name: "tally_accounts_api_requests_total",
		Help: "Account changes asked for, by kind and HTTP status of the answer (201: on the accounts topic)."}, []string{"kind", "status"})
	if cfg.Registry != nil {
		if err := cfg.Registry.Register(answers); err != nil {
			return nil, err
		}
	}
	return &AccountsAPI{cfg: cfg, catalogue: catalogue, pub: pub, log: log, now: now, answers: answers}, nil
}

// accountChanges are the kinds of change, by the last segment of their path: the event type,
// and the request fields that are not the event's data (the rest are, beside the account).
var accountChanges = map[string]struct {
	typ string
	// at names the field that sets the event's time (when the change takes effect), if any.
	at string
}{
	"activations":     {typ: contract.ActivatedType, at: "at"},
	"packs":           {typ: contract.PackPurchasedType},
	"price-overrides": {typ: contract.PriceOverrideType},
}

// Register mounts the API's routes on mux.
func (a *AccountsAPI) Register(mux *http.ServeMux) {
	for kind := range accountChanges {
		mux.HandleFunc("POST /v1/accounts/{account}/"+kind, func(w http.ResponseWriter, r *http.Request) {
			sw := &statusWriter{ResponseWriter: w, status: http.StatusOK}
			a.change(sw, r, kind)
			a.answers.WithLabelValues(kind, strconv.Itoa(sw.status)).Inc()
		})
	}
}

// maxChangeBytes bounds a request body: a change is a few hundred bytes.
const maxChangeBytes = 64 << 10

// Accepted is the answer to an accepted change: the event now on the accounts topic.
type Accepted struct {
	ID      string `json:"id"`
	Type    string `json:"type"`
	Account string `json:"account"`
	Time    string `json:"time"`
}

func (a *AccountsAPI) change(w http.ResponseWriter, r *http.Request, kind string) {
	key, refused := a.cfg.Keys.Admit(r)
	if refused != nil {
		refused.SetHeaders(w.Header())
		problem.Write(w, refused.Status, refused.Detail)
		return
	}
	account := r.PathValue("account")
	if err := contract.ValidateAccount(account); err != nil {
		problem.Write(w, http.StatusBadRequest, strings.Replace(err.Error(), "data.account", "the account", 1))
		return
	}
	if !key.Console || !key.Accounts.Allows(account) {
		problem.Write(w, http.StatusForbidden, fmt.Sprintf("the key %q may not change the terms of account %q (it needs ;console and the account in its scope)", key.Name, account))
		return
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxChangeBytes))
	if err != nil {
		problem.Write(w, http.StatusRequestEntityTooLarge, fmt.Sprintf("the body is larger than %d bytes", maxChangeBytes))
		return
	}
	now := a.now().UTC().Truncate(time.Millisecond)
	raw, ev, err := a.event(accountChanges[kind].typ, accountChanges[kind].at, account, body, now)
	if err != nil {
		problem.Write(w, http.StatusBadRequest, err.Error())
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), a.cfg.PublishTimeout)
	err = a.pub.Publish(ctx, []Record{{Key: []byte(account), Value: raw, Time: now}})
	cancel()
	if err != nil {
		a.log.Error("accounts API: publishing to kafka failed", "account", account, "type", ev.Type, "id", ev.ID, "err", err)
		w.Header().Set("Retry-After", "1")
		problem.Write(w, http.StatusServiceUnavailable, "the accounts log did not acknowledge the change; retry the request (its id makes the retry safe)")
		return
	}
	a.log.Info("accounts API: change accepted", "key", key.Name, "account", account, "type", ev.Type, "id", ev.ID)
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(http.StatusCreated)
	_ = json.NewEncoder(w).Encode(Accepted{ID: ev.ID, Type: ev.Type, Account: account, Time: cloudevent.FormatTime(ev.Time)})
}

// event builds the CloudEvent a request body asks for and holds it to billing's rules: the
// body's id is the event's id; at (when the kind has one) its time, else now; every other field
// is the event's data, beside the account from the path. The error is the reason to give.
func (a *AccountsAPI) event(typ, atField, account string, body []byte, now time.Time) ([]byte, cloudevent.Event, error) {
	var fields map[string]json.RawMessage
	dec := json.NewDecoder(bytes.NewReader(body))
	if err := dec.Decode(&fields); err != nil || fields == nil || dec.More() {
		return nil, cloudevent.Event{}, errors.New("the body must be one JSON object")
	}
	var id string
	if err := json.Unmarshal(fields["id"], &id); err != nil || id == "" {
		return nil, cloudevent.Event{}, errors.New("id is missing: give each change an id of your own (a retry with the same id is harmless)")
	}
	delete(fields, "id")
	at := now
	if raw, ok := fields[atField]; ok && atField != "" {
		var s string
		if err := json.Unmarshal(raw, &s); err != nil {
			return nil, cloudevent.Event{}, fmt.Errorf("%s must be an RFC 3339 time", atField)
		}
		t, err := cloudevent.ParseTime(s)
		if err != nil {
			return nil, cloudevent.Event{}, fmt.Errorf("%s: %v", atField, err)
		}
		at = t
		delete(fields, atField)
	}
	if _, ok := fields["account"]; ok {
		return nil, cloudevent.Event{}, errors.New("account is given by the path, not the body")
	}
	fields["account"], _ = json.Marshal(account)
	e := contract.Event{ID: id, Source: "tally-accounts-api", Type: typ, Time: at, Data: fields}
	raw, err := contract.Encode(e)
	if err != nil {
		return nil, cloudevent.Event{}, errors.New("id must be UTF-8")
	}
	// The settle worker journals the event with a recordedat of its own; that instant changes
	// nothing for an account event (judged by its own time), so the bytes to publish are read
	// as they are.
	_, _, ev, err := settle.DecodeLine(raw, a.catalogue)
	if err != nil {
		return nil, ev, errors.New(bodyReason(err.Error()))
	}
	return raw, ev, nil
}

// bodyReason words billing's reason for the request: the body's fields are the event's data.
func bodyReason(reason string) string { return strings.ReplaceAll(reason, "data.", "") }

// statusWriter remembers the status of an answer, for the metrics.
type statusWriter struct {
	http.ResponseWriter
	status int
}

func (w *statusWriter) WriteHeader(status int) {
	w.status = status
	w.ResponseWriter.WriteHeader(status)
}

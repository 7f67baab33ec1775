package ingest

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/tally-billing/tally/contract"
	"github.com/tally-billing/tally/internal/apikey"
	"github.com/tally-billing/tally/internal/cloudevent"
	"github.com/tally-billing/tally/internal/problem"
	"github.com/tally-billing/tally/internal/telemetry"
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
	// CheckReusedIDs refuses (409) an id the accounts topic already holds for another change:
	// the API is told of the topic's events by Observe, and answers 503 until CaughtUp.
	CheckReusedIDs bool
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
	ids       changeIDs
}

// changeIDs are the ids of the changes on the accounts topic, with the digest of the request
// each was made from ("" when unknown: an event not made by this API), and those being
// published now.
type changeIDs struct {
	mu       sync.Mutex
	caughtUp bool
	seen     map[string]string
	inFlight map[string]bool
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
	return &AccountsAPI{cfg: cfg, catalogue: catalogue, pub: pub, log: log, now: now, answers: answers,
		ids: changeIDs{seen: map[string]string{}, inFlight: map[string]bool{}}}, nil
}

// Observe records a record of the accounts topic (CheckReusedIDs): its id and request digest.
// The first event of an id is the one that stands.
func (a *AccountsAPI) Observe(raw []byte) {
	var ev struct {
		ID      string `json:"id"`
		Request string `json:"tallyrequest"`
	}
	if json.Unmarshal(raw, &ev) != nil || ev.ID == "" {
		return
	}
	a.ids.mu.Lock()
	defer a.ids.mu.Unlock()
	if _, ok := a.ids.seen[ev.ID]; !ok {
		a.ids.seen[ev.ID] = ev.Request
	}
}

// CaughtUp marks the accounts topic read to its end as of the start: from now on an id is
// checked against all of it.
func (a *AccountsAPI) CaughtUp() {
	a.ids.mu.Lock()
	a.ids.caughtUp = true
	a.ids.mu.Unlock()
}

// claim checks id against the changes known and holds it while it is published; release
// ends the hold, recording the change when it is on the topic. The error is the answer to give.
func (a *AccountsAPI) claim(id, digest string) (status int, reason string) {
	a.ids.mu.Lock()
	defer a.ids.mu.Unlock()
	switch known, ok := a.ids.seen[id]; {
	case !a.ids.caughtUp:
		return http.StatusServiceUnavailable, "the accounts topic is still being read from its start (to tell a retry from an id used before); retry shortly"
	case a.ids.inFlight[id]:
		return http.StatusConflict, fmt.Sprintf("a change with id %q is being written now; retry it once that request has its answer", id)
	case ok && known != "" && known != digest:
		return http.StatusConflict, fmt.Sprintf("id %q was used for another change; a retry must repeat the request exactly, a new change needs a new id", id)
	}
	a.ids.inFlight[id] = true
	return 0, ""
}

func (a *AccountsAPI) release(id, digest string, published bool) {
	a.ids.mu.Lock()
	defer a.ids.mu.Unlock()
	delete(a.ids.inFlight, id)
	if _, ok := a.ids.seen[id]; published && !ok {
		a.ids.seen[id] = digest
	}
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
			sw := telemetry.NewStatusWriter(w)
			a.change(sw, r, kind)
			a.answers.WithLabelValues(kind, strconv.Itoa(sw.Status)).Inc()
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
	raw, ev, digest, err := a.event(accountChanges[kind].typ, accountChanges[kind].at, account, body, now)
	if err != nil {
		problem.Write(w, http.StatusBadRequest, err.Error())
		return
	}
	if a.cfg.CheckReusedIDs {
		if status, reason := a.claim(ev.ID, digest); status != 0 {
			if status == http.StatusServiceUnavailable {
				w.Header().Set("Retry-After", "1")
			}
			problem.Write(w, status, reason)
			return
		}
	}
	ctx, cancel := context.WithTimeout(r.Context(), a.cfg.PublishTimeout)
	err = a.pub.Publish(ctx, []Record{{Key: []byte(account), Value: raw, Time: now}})
	cancel()
	if a.cfg.CheckReusedIDs {
		a.release(ev.ID, digest, err == nil)
	}
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
// is the event's data, beside the account from the path. The event carries the request's
// digest (of the type, the account and the body's fields as given, so a retry of the request
// has the same one even when its time defaulted to another now). The error is the reason to give.
func (a *AccountsAPI) event(typ, atField, account string, body []byte, now time.Time) ([]byte, cloudevent.Event, string, error) {
	var fields map[string]json.RawMessage
	dec := json.NewDecoder(bytes.NewReader(body))
	if err := dec.Decode(&fields); err != nil || fields == nil || dec.More() {
		return nil, cloudevent.Event{}, "", errors.New("the body must be one JSON object")
	}
	var id string
	if err := json.Unmarshal(fields["id"], &id); err != nil || id == "" {
		return nil, cloudevent.Event{}, "", errors.New("id is missing: give each change an id of your own (a retry with the same id is harmless)")
	}
	delete(fields, "id")
	digest := requestDigest(typ, account, fields)
	at := now
	if raw, ok := fields[atField]; ok && atField != "" {
		var s string
		if err := json.Unmarshal(raw, &s); err != nil {
			return nil, cloudevent.Event{}, "", fmt.Errorf("%s must be an RFC 3339 time", atField)
		}
		t, err := cloudevent.ParseTime(s)
		if err != nil {
			return nil, cloudevent.Event{}, "", fmt.Errorf("%s: %v", atField, err)
		}
		at = t
		delete(fields, atField)
	}
	if _, ok := fields["account"]; ok {
		return nil, cloudevent.Event{}, "", errors.New("account is given by the path, not the body")
	}
	fields["account"], _ = json.Marshal(account)
	e := contract.Event{ID: id, Source: "tally-accounts-api", Type: typ, Time: at, Request: digest, Data: fields}
	raw, err := contract.Encode(e)
	if err != nil {
		return nil, cloudevent.Event{}, "", errors.New("id must be UTF-8")
	}
	// The settle worker journals the event with a recordedat of its own; that instant changes
	// nothing for an account event (judged by its own time), so the bytes to publish are read
	// as they are.
	_, _, ev, err := settle.DecodeLine(raw, a.catalogue)
	if err != nil {
		return nil, ev, "", errors.New(bodyReason(err.Error()))
	}
	return raw, ev, digest, nil
}

// requestDigest names a request's content: its type, account and fields (compacted, keys
// sorted), the id aside.
func requestDigest(typ, account string, fields map[string]json.RawMessage) string {
	compact := make(map[string]json.RawMessage, len(fields))
	for k, v := range fields {
		var b bytes.Buffer
		if json.Compact(&b, v) == nil {
			v = b.Bytes()
		}
		compact[k] = v
	}
	canonical, _ := json.Marshal(compact)
	sum := sha256.Sum256([]byte(typ + "\x00" + account + "\x00" + string(canonical)))
	return "sha256:" + hex.EncodeToString(sum[:16])
}

// bodyReason words billing's reason for the request: the body's fields are the event's data.
func bodyReason(reason string) string { return strings.ReplaceAll(reason, "data.", "") }

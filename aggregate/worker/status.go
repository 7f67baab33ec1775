package worker

import (
	"context"
	"encoding/json"
	"log/slog"
	"net/http"
	"sync"

	"github.com/segmentio/kafka-go"

	"github.com/tally-billing/tally/contract"
	"github.com/tally-billing/tally/internal/kafkax"
)

// Statuses follows the compacted account-status topic the settle worker writes, for
// GET /v1/accounts/{account}/status.
type Statuses struct {
	cluster kafkax.Cluster
	topic   string
	log     *slog.Logger
	loading

	mu sync.RWMutex
	by map[string]AccountStatus
}

// AccountStatus is the body of GET /v1/accounts/{account}/status.
type AccountStatus struct {
	Account string `json:"account"`
	Status  string `json:"status"` // active or suspended
	Reason  string `json:"reason,omitempty"`
	Since   string `json:"since,omitempty"`
}

// NewStatuses builds the follower.
func NewStatuses(cluster kafkax.Cluster, topic string, log *slog.Logger) *Statuses {
	return &Statuses{cluster: cluster, topic: topic, log: log, loading: loading{topic: topic}, by: map[string]AccountStatus{}}
}

// Run follows every partition from the beginning until ctx ends.
func (s *Statuses) Run(ctx context.Context) error {
	return kafkax.Follow(ctx, kafkax.FollowConfig{Brokers: s.cluster.Brokers, Security: s.cluster.Security, Topic: s.topic, CaughtUp: s.caughtUp, Failing: s.readFailing, Log: s.log},
		func(m kafka.Message) { s.apply(m.Value) })
}

func (s *Statuses) apply(raw []byte) {
	var ev struct {
		Type string                 `json:"type"`
		Time string                 `json:"time"`
		Data contract.AccountStatus `json:"data"`
	}
	if json.Unmarshal(raw, &ev) != nil || ev.Data.Account == "" {
		return
	}
	st := AccountStatus{Account: ev.Data.Account, Status: "active", Reason: ev.Data.Reason, Since: ev.Time}
	if ev.Type == contract.AccountSuspendedType {
		st.Status = "suspended"
	}
	s.mu.Lock()
	s.by[st.Account] = st
	s.mu.Unlock()
}

// Get is the account's status: active unless the last status event suspended it.
func (s *Statuses) Get(account string) AccountStatus {
	s.mu.RLock()
	defer s.mu.RUnlock()
	if st, ok := s.by[account]; ok {
		return st
	}
	return AccountStatus{Account: account, Status: "active"}
}

func (a *API) status(w http.ResponseWriter, r *http.Request) {
	account := r.PathValue("account")
	if err := contract.ValidateAccount(account); err != nil {
		writeError(w, http.StatusBadRequest, err.Error())
		return
	}
	if err := a.Statuses.Loaded(r.Context()); err != nil {
		writeError(w, http.StatusServiceUnavailable, "account statuses not loaded yet ("+err.Error()+"); retry shortly")
		return
	}
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(a.Statuses.Get(account))
}

package contract

import "time"

// UsageSummary describes many stored usage events of one (account, service, billing month) by
// their sum and their extremes, which is all a reader needs to know that every one of them would
// be accepted on its own: then they count exactly as one event of Calls calls at First. The settle
// worker reads usage_events this way, a row per (account, service, month) instead of per event.
type UsageSummary struct {
	Account, Service string
	Events           int64 // how many usage events
	Calls            int64 // their calls, summed
	// The extremes of the events' calls and id lengths (in bytes).
	MinCalls, MaxCalls int64
	MinIDLen, MaxIDLen int
	// IDsNotPlain counts the ids PlainUsage would send the slow way (a byte outside printable
	// ASCII, or one JSON escapes).
	IDsNotPlain int64
	// First and Last are the earliest and latest call instants; Lead is the largest amount by
	// which a call's time is ahead of its receipt; LastReceived is the latest receipt.
	First, Last  time.Time
	Lead         time.Duration
	LastReceived time.Time
}

// Plain reports whether PlainUsage holds for every event the summary describes. A service's
// availability is an interval (available from, retired at), so checking the first and last
// instants checks every one between.
func (s UsageSummary) Plain(services ServiceChecker) bool {
	return s.Events > 0 && s.IDsNotPlain == 0 && !s.First.IsZero() && !s.Last.IsZero() && !s.LastReceived.IsZero() && !s.Last.Before(s.First) &&
		s.MinIDLen > 0 && s.MaxIDLen <= MaxIDLen && s.MinCalls >= 1 && s.MaxCalls <= MaxCallsPerEvent && s.Lead <= MaxClockSkew &&
		ValidateAccount(s.Account) == nil && services.CheckService(s.Service, s.First) == nil && services.CheckService(s.Service, s.Last) == nil
}

// plainID: every byte of id is one PlainUsage lets through (printable ASCII that JSON does not
// escape).
func plainID(id string) bool {
	for i := 0; i < len(id); i++ {
		if c := id[i]; c < 0x20 || c >= 0x7f || c == '"' || c == '\\' || c == '<' || c == '>' || c == '&' {
			return false
		}
	}
	return true
}

// Add counts one more event, received at receivedAt, into the summary.
func (s *UsageSummary) Add(u Usage, receivedAt time.Time) {
	if s.Events == 0 {
		*s = UsageSummary{Account: u.Account, Service: u.Service, MinCalls: u.Calls, MaxCalls: u.Calls, MinIDLen: len(u.ID), MaxIDLen: len(u.ID),
			First: u.Time, Last: u.Time, Lead: u.Time.Sub(receivedAt), LastReceived: receivedAt}
	}
	s.Events++
	s.Calls += u.Calls
	s.MinCalls, s.MaxCalls = min(s.MinCalls, u.Calls), max(s.MaxCalls, u.Calls)
	s.MinIDLen, s.MaxIDLen = min(s.MinIDLen, len(u.ID)), max(s.MaxIDLen, len(u.ID))
	if !plainID(u.ID) {
		s.IDsNotPlain++
	}
	if u.Time.Before(s.First) {
		s.First = u.Time
	}
	if u.Time.After(s.Last) {
		s.Last = u.Time
	}
	s.Lead = max(s.Lead, u.Time.Sub(receivedAt))
	if receivedAt.After(s.LastReceived) {
		s.LastReceived = receivedAt
	}
}

// Package cloudevent decodes and encodes CloudEvents 1.0 in structured JSON mode
// (application/cloudevents+json), the envelope of every event Tally reads or writes (SPEC §4).
package cloudevent

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"
)

// SpecVersion is the only CloudEvents version Tally speaks.
const SpecVersion = "1.0"

// ContentType is the media type of one structured-mode event; BatchContentType of a JSON array.
const (
	ContentType      = "application/cloudevents+json"
	BatchContentType = "application/cloudevents-batch+json"
)

// Event is a decoded input envelope. Data stays raw: each event type decodes its own.
type Event struct {
	ID     string
	Source string
	Type   string
	// Time is the occurrence time; zero when the event carried none.
	Time time.Time
	// RecordedAt is the extension attribute "recordedat": when the event entered the log.
	// Zero when absent.
	RecordedAt time.Time
	Data       json.RawMessage
}

// wire is the JSON shape; pointers tell "absent" from "empty".
type wire struct {
	SpecVersion     *string         `json:"specversion"`
	ID              *string         `json:"id"`
	Source          *string         `json:"source"`
	Type            *string         `json:"type"`
	Time            *string         `json:"time"`
	DataContentType *string         `json:"datacontenttype"`
	RecordedAt      *string         `json:"recordedat"`
	Data            json.RawMessage `json:"data"`
	DataBase64      *string         `json:"data_base64"`
}

// Error is a decoding or validation failure of outside input. Reason is meant for the sender;
// Code is a short, bounded name of what is wrong (for metrics labels and dead-letter headers).
type Error struct{ Code, Reason string }

func (e *Error) Error() string { return e.Reason }

// Invalid builds an *Error.
func Invalid(code, format string, args ...any) error {
	return &Error{Code: code, Reason: fmt.Sprintf(format, args...)}
}

func reject(format string, args ...any) error { return Invalid("envelope", format, args...) }

// IsInvalid reports whether err says the input itself is bad (as opposed to an I/O failure).
func IsInvalid(err error) bool {
	var e *Error
	return errors.As(err, &e)
}

// Decode parses one structured-mode CloudEvent. It checks the envelope only: specversion (when
// present) must be 1.0, id and type non-empty, time and recordedat RFC 3339, data a JSON object.
func Decode(raw []byte) (Event, error) {
	// encoding/json would turn each invalid byte into U+FFFD, and two distinct ids into one.
	if !utf8.Valid(raw) {
		return Event{}, reject("the event is not valid UTF-8")
	}
	var w wire
	dec := json.NewDecoder(bytes.NewReader(raw))
	if err := dec.Decode(&w); err != nil {
		return Event{}, reject("not a JSON CloudEvent: %v", err)
	}
	if dec.More() {
		return Event{}, reject("trailing data after the CloudEvent object")
	}
	var ev Event
	if w.SpecVersion != nil && *w.SpecVersion != SpecVersion {
		return Event{}, reject("specversion %q is not supported (want %q)", *w.SpecVersion, SpecVersion)
	}
	if w.ID == nil || *w.ID == "" {
		return Event{}, reject("id is missing")
	}
	if len(*w.ID) > 256 {
		return Event{}, reject("id is longer than 256 bytes")
	}
	if err := printable("id", *w.ID); err != nil {
		return Event{}, err
	}
	ev.ID = *w.ID
	if w.Type == nil || *w.Type == "" {
		return Event{}, reject("type is missing")
	}
	ev.Type = *w.Type
	if w.Source != nil {
		if err := printable("source", *w.Source); err != nil {
			return Event{}, err
		}
		ev.Source = *w.Source
	}
	if w.DataContentType != nil && !isJSONMediaType(*w.DataContentType) {
		return Event{}, reject("datacontenttype %q is not JSON", *w.DataContentType)
	}
	if w.DataBase64 != nil {
		return Event{}, reject("data_base64 is not accepted: send data as a JSON object")
	}
	var err error
	if w.Time != nil {
		if ev.Time, err = ParseTime(*w.Time); err != nil {
			return Event{}, reject("time: %v", err)
		}
	}
	if w.RecordedAt != nil {
		if ev.RecordedAt, err = ParseTime(*w.RecordedAt); err != nil {
			return Event{}, reject("recordedat: %v", err)
		}
	}
	data := bytes.TrimSpace(w.Data)
	if len(data) == 0 || bytes.Equal(data, []byte("null")) {
		return Event{}, reject("data is missing")
	}
	if data[0] != '{' {
		return Event{}, reject("data must be a JSON object")
	}
	ev.Data = data
	return ev, nil
}

// printable refuses control characters (they hide in logs and terminals) and U+FFFD (what an
// escaped lone surrogate decodes to: two distinct ids would become one).
func printable(name, v string) error {
	for _, r := range v {
		if unicode.IsControl(r) || r == utf8.RuneError {
			return reject("%s holds %U: ids and sources must be printable UTF-8", name, r)
		}
	}
	return nil
}

func isJSONMediaType(s string) bool {
	mt := strings.ToLower(strings.TrimSpace(strings.SplitN(s, ";", 2)[0]))
	return mt == "application/json" || strings.HasSuffix(mt, "+json")
}

// ParseTime parses an RFC 3339 timestamp (fractional seconds allowed).
func ParseTime(s string) (time.Time, error) {
	t, err := time.Parse(time.RFC3339Nano, s)
	if err != nil {
		return time.Time{}, fmt.Errorf("%q is not an RFC 3339 time", s)
	}
	return t, nil
}

// DecodeData decodes an event's data object strictly: unknown fields are errors, so a misspelt
// field is reported rather than silently defaulted.
func DecodeData(data json.RawMessage, v any) error {
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	dec.UseNumber()
	if err := dec.Decode(v); err != nil {
		return Invalid("data", "data: %v", cleanJSONError(err))
	}
	return nil
}

// Int64 reads a JSON integer literal (not a string, not a fraction) as an int64.
func Int64(raw json.RawMessage) (int64, bool) {
	raw = bytes.TrimSpace(raw)
	if len(raw) == 0 || !(raw[0] == '-' || raw[0] >= '0' && raw[0] <= '9') {
		return 0, false
	}
	n, err := json.Number(raw).Int64()
	return n, err == nil
}

func cleanJSONError(err error) string {
	return strings.TrimPrefix(err.Error(), "json: ")
}

// Out is an event Tally emits. Its JSON field order is fixed, so emitted bytes are reproducible.
type Out struct {
	SpecVersion     string `json:"specversion"`
	ID              string `json:"id"`
	Source          string `json:"source"`
	Type            string `json:"type"`
	Subject         string `json:"subject,omitempty"`
	Time            string `json:"time"`
	DataContentType string `json:"datacontenttype"`
	Data            any    `json:"data"`
}

// NewOut builds an output envelope; at is the event time as FormatTime writes it (callers
// emitting many events at one instant format it once).
func NewOut(source, typ, id, subject, at string, data any) Out {
	return Out{
		SpecVersion: SpecVersion, ID: id, Source: source, Type: typ, Subject: subject,
		Time: at, DataContentType: "application/json", Data: data,
	}
}

// FormatTime writes t as RFC 3339 (with fractional seconds only when needed) in its location.
func FormatTime(t time.Time) string { return t.Format(time.RFC3339Nano) }

// Package cloudevent decodes and encodes CloudEvents 1.0 in structured JSON mode
// (application/cloudevents+json), the envelope of every event Tally reads or writes (SPEC §4).
package cloudevent

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"slices"
	"strings"
	"sync"
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
	if err := checkAttributes(raw); err != nil {
		return Event{}, err
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
	if w.DataContentType != nil && !IsJSONMediaType(*w.DataContentType) {
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
	if r, ok := Printable(v); !ok {
		return reject("%s holds %U: ids and sources must be printable UTF-8", name, r)
	}
	return nil
}

// Printable reports whether an id or source is acceptable: no control character, no U+FFFD
// (else it returns the first such rune). v may be a string or the bytes of one.
func Printable[T string | []byte](v T) (rune, bool) {
	for i := 0; i < len(v); {
		c := v[i]
		if c < utf8.RuneSelf {
			if c < 0x20 || c == 0x7f {
				return rune(c), false
			}
			i++
			continue
		}
		r, n := utf8.DecodeRuneInString(string(v[i:]))
		if unicode.IsControl(r) || r == utf8.RuneError {
			return r, false
		}
		i += n
	}
	return 0, true
}

// IsJSONMediaType reports whether a datacontenttype says JSON: application/json or any +json
// type, parameters and case aside.
func IsJSONMediaType(s string) bool {
	if s == "application/json" {
		return true // what nearly every producer sends, without the work below
	}
	mt := strings.ToLower(strings.TrimSpace(strings.SplitN(s, ";", 2)[0]))
	return mt == "application/json" || strings.HasSuffix(mt, "+json")
}

// ParseTime parses an RFC 3339 timestamp (fractional seconds allowed). Go's parser alone also
// takes what RFC 3339 does not ("T0:00:00Z", a comma before the fraction, an offset of +24:00),
// which another consumer of the same event may read differently or refuse: the shape is checked
// first.
func ParseTime(s string) (time.Time, error) {
	if !rfc3339Shape(s) {
		return time.Time{}, fmt.Errorf("%q is not an RFC 3339 time", s)
	}
	t, err := time.Parse(time.RFC3339Nano, s)
	if err != nil { // the shape holds, the values do not (February 30th, 25 o'clock)
		return time.Time{}, fmt.Errorf("%q is not an RFC 3339 time", s)
	}
	return t, nil
}

// rfc3339Shape: YYYY-MM-DDTHH:MM:SS, an optional . and digits, then Z or ±HH:MM (HH ≤ 23).
func rfc3339Shape(s string) bool {
	digits := func(from, to int) bool {
		for i := from; i < to; i++ {
			if s[i] < '0' || s[i] > '9' {
				return false
			}
		}
		return true
	}
	if len(s) < 20 || !digits(0, 4) || s[4] != '-' || !digits(5, 7) || s[7] != '-' || !digits(8, 10) || s[10] != 'T' ||
		!digits(11, 13) || s[13] != ':' || !digits(14, 16) || s[16] != ':' || !digits(17, 19) {
		return false
	}
	i := 19
	if s[i] == '.' {
		j := i + 1
		for j < len(s) && s[j] >= '0' && s[j] <= '9' {
			j++
		}
		if j == i+1 {
			return false
		}
		i = j
	}
	switch rest := s[i:]; {
	case rest == "Z":
		return true
	case len(rest) == 6 && (rest[0] == '+' || rest[0] == '-') && rest[3] == ':':
		return digits(i+1, i+3) && digits(i+4, i+6) && rest[1:3] <= "23" && rest[4:6] <= "59"
	}
	return false
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
	names := jsonNames(reflect.TypeOf(v))
	return eachMember(data, func(key string, _ json.RawMessage) error {
		return exactName(key, names, "data", "data.%s: field names are case-sensitive; did you mean %q?")
	})
}

// attributeNames are the members of a structured event CloudEvents 1.0 defines: those Decode
// reads and two it ignores.
var attributeNames = append(jsonNames(reflect.TypeOf(wire{})), "subject", "dataschema")

// checkAttributes holds a structured event's members (raw is a valid JSON object) to the
// CloudEvents rules the official SDKs enforce: names are case-sensitive ("dAtA" is not "data":
// encoding/json alone would read it as data), extension names are ASCII letters and digits,
// extension values are strings, numbers or booleans, subject and dataschema are strings.
func checkAttributes(raw []byte) error {
	return eachMember(raw, func(name string, value json.RawMessage) error {
		if err := exactName(name, attributeNames, "envelope", "attribute %q: CloudEvents attribute names are case-sensitive; did you mean %q?"); err != nil {
			return err
		}
		switch kind := value[0]; {
		case name == "subject" || name == "dataschema":
			if kind != '"' && kind != 'n' {
				return reject("%s must be a string", name)
			}
		case slices.Contains(attributeNames, name):
		case !validExtensionName(name):
			return reject("attribute %q: CloudEvents attribute names are ASCII letters and digits", name)
		case kind == '{':
			return reject("extension %q holds a JSON object: extension values are strings, numbers or booleans", name)
		case kind == '[':
			return reject("extension %q holds a JSON array: extension values are strings, numbers or booleans", name)
		}
		return nil
	})
}

func validExtensionName(name string) bool {
	for i := 0; i < len(name); i++ {
		c := name[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9') {
			return false
		}
	}
	return name != ""
}

// exactName refuses a key that matches one of names only the way encoding/json matches them,
// ignoring case ("dAtA" for "data", "ſervice" for "service"): CloudEvents names are
// case-sensitive, the official SDKs read such a key as another attribute, and the fast decoders
// would not know it. The error has code and a reason from format, which takes the key and the
// name it resembles.
func exactName(key string, names []string, code, format string) error {
	for _, name := range names {
		if key != name && strings.EqualFold(key, name) {
			return Invalid(code, format, key, name)
		}
	}
	return nil
}

// eachMember calls fn with each member of the JSON object raw (known to be valid), in the
// document's order (so a reason is always the same one), until fn fails.
func eachMember(raw []byte, fn func(name string, value json.RawMessage) error) error {
	dec := json.NewDecoder(bytes.NewReader(raw))
	if _, err := dec.Token(); err != nil {
		return nil
	}
	for dec.More() {
		tok, err := dec.Token()
		var value json.RawMessage
		if err != nil || dec.Decode(&value) != nil {
			return nil
		}
		name, _ := tok.(string)
		if err := fn(name, value); err != nil {
			return err
		}
	}
	return nil
}

var namesOfType sync.Map // reflect.Type → []string

// jsonNames lists the JSON member names of a struct type (or a pointer to one).
func jsonNames(t reflect.Type) []string {
	if names, ok := namesOfType.Load(t); ok {
		return names.([]string)
	}
	names := structNames(t)
	namesOfType.Store(t, names)
	return names
}

func structNames(t reflect.Type) []string {
	if t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	if t.Kind() != reflect.Struct {
		return nil
	}
	names := make([]string, 0, t.NumField())
	for i := range t.NumField() {
		f := t.Field(i)
		name, _, _ := strings.Cut(f.Tag.Get("json"), ",")
		switch {
		case name == "-":
		case name != "":
			names = append(names, name)
		case f.IsExported():
			names = append(names, f.Name)
		}
	}
	return names
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

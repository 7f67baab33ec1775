package cloudevent

import (
	"bytes"
	"fmt"
	"net/http"
	"net/url"
	"testing"
)

// Whatever headers and body arrive, FromBinary either refuses them with a reason or builds an
// event that Decode reads back with the same id, type and data: a header cannot smuggle another
// attribute or data in (JSON escaping), nor can the body.
func FuzzFromBinary(f *testing.F) {
	f.Add("1.0", "e-1", "tally.usage.v1", "gw", "application/json", `{"account":"acme"}`, "x-1")
	f.Add("1.0", `a","data":{"x":1},"id":"b`, "t%22", "", "application/json; charset=utf-8", `{"a":[1,2]}`, "%ZZ")
	f.Fuzz(func(t *testing.T, spec, id, typ, source, contentType, body, ext string) {
		h := http.Header{}
		h.Set("Ce-Specversion", spec)
		h.Set("Ce-Id", id)
		h.Set("Ce-Type", typ)
		h.Set("Ce-Source", source)
		h.Set("Ce-Tallyext", ext)
		h.Set("Content-Type", contentType)
		raw, err := FromBinary(h, []byte(body))
		if err != nil {
			if !IsInvalid(err) {
				t.Fatalf("%v is not a reason for the sender", err)
			}
			return
		}
		ev, err := Decode(raw)
		if err != nil {
			return // refused as any structured event would be (missing id, bad data, …)
		}
		wantID, _ := url.PathUnescape(id)
		wantType, _ := url.PathUnescape(typ)
		if ev.ID != wantID || ev.Type != wantType {
			t.Fatalf("%s: id %q type %q; want %q %q", raw, ev.ID, ev.Type, wantID, wantType)
		}
		if !bytes.Equal(bytes.TrimSpace(ev.Data), bytes.TrimSpace([]byte(body))) {
			t.Fatalf("%s: data %s; want the body %s", raw, ev.Data, body)
		}
	})
}

// Names are case-sensitive, as CloudEvents says and the SDKs read them: a known name in other
// letters is refused with the name it resembles, not read as that attribute; extensions are
// what CloudEvents allows (ASCII letters and digits, scalar values), else refused with why.
func TestNamesAreCaseSensitive(t *testing.T) {
	for raw, reason := range map[string]string{
		`{"specversion":"1.0","id":"a","type":"t","dAtA":{"x":1}}`:                                     `attribute "dAtA": CloudEvents attribute names are case-sensitive; did you mean "data"?`,
		`{"specversion":"1.0","ID":"a","type":"t","data":{"x":1}}`:                                     `attribute "ID": CloudEvents attribute names are case-sensitive; did you mean "id"?`,
		`{"specversion":"1.0","id":"a","id":"b","type":"t","data":{"x":1}}`:                            "",
		`{"specversion":"1.0","id":"a","type":"t","subject":"S","data":{}}`:                            "",
		`{"specversion":"1.0","id":"a","type":"t","Subject":"S","data":{}}`:                            `attribute "Subject": CloudEvents attribute names are case-sensitive; did you mean "subject"?`,
		`{"specversion":"1.0","id":"a","type":"t","traceId":"x","n":1.5,"b":false,"z":null,"data":{}}`: "",
		`{"specversion":"1.0","id":"a","type":"t","trace_id":"x","data":{}}`:                           `attribute "trace_id": CloudEvents attribute names are ASCII letters and digits`,
		`{"specversion":"1.0","id":"a","type":"t","tags":["x"],"data":{}}`:                             `extension "tags" holds a JSON array: extension values are strings, numbers or booleans`,
		`{"specversion":"1.0","id":"a","type":"t","subject":{},"data":{}}`:                             "subject must be a string",
		"{\"specversion\":\"1.0\",\"id\":\"a\",\"\\u0074ype\":\"t\",\"data\":{}}":                      "",
	} {
		_, err := Decode([]byte(raw))
		if got := fmt.Sprint(err); reason == "" && err != nil || reason != "" && got != reason {
			t.Errorf("%s: %v; want %q", raw, err, reason)
		}
	}
	var d struct {
		Service string `json:"service"`
	}
	err := DecodeData([]byte(`{"ſervice":"x"}`), &d)
	if want := `data.ſervice: field names are case-sensitive; did you mean "service"?`; fmt.Sprint(err) != want {
		t.Errorf("data: %v; want %q", err, want)
	}
}

// Times are RFC 3339 exactly: what Go's parser takes beyond it is refused too.
func TestParseTimeIsStrictRFC3339(t *testing.T) {
	for s, ok := range map[string]bool{
		"2026-10-01T00:00:00Z": true, "2026-10-01T00:00:00+08:00": true, "2026-10-01T00:00:00.123456789-05:30": true,
		"2026-10-01T23:59:59.5Z": true, "2026-10-01T00:00:00.123456789123Z": true,
		"2026-10-01T0:00:00Z": false, "2026-10-01T00:00:00,5Z": false, "2026-10-01T00:00:00+24:00": false, "2026-10-01T00:00:00.Z": false,
		"2026-10-01t00:00:00z": false, "2026-10-01 00:00:00Z": false, "2026-10-01T00:00:00+0800": false, "2026-10-01T00:00:00": false,
		"2026-02-30T00:00:00Z": false, "": false,
	} {
		if _, err := ParseTime(s); (err == nil) != ok {
			t.Errorf("%q: %v; want accepted %v", s, err, ok)
		}
	}
}

package cloudevent

import (
	"bytes"
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

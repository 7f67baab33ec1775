package apikey_test

import (
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/tally-billing/tally/internal/apikey"
)

func ring(t *testing.T, opts apikey.Options, entries ...string) *apikey.Keyring {
	t.Helper()
	keys, err := apikey.Load(strings.Join(entries, ","))
	if err != nil {
		t.Fatal(err)
	}
	r, err := apikey.NewKeyring(keys, opts)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func request(remote string, header ...string) *http.Request {
	r := httptest.NewRequest(http.MethodGet, "/v1/accounts/acme/usage", nil)
	r.RemoteAddr = remote
	for i := 0; i+1 < len(header); i += 2 {
		r.Header.Set(header[i], header[i+1])
	}
	return r
}

// A key is found from a bearer header or from Basic credentials' password (what a browser
// sends after the challenge); anything else is no key.
func TestAuthenticateTakesBearerOrBasic(t *testing.T) {
	k := ring(t, apikey.Options{}, "tenant=tenant-key-0123456789;accounts=acme|shop-*", "ops=ops-key-0123456789")
	basic := httptest.NewRequest(http.MethodGet, "/", nil)
	basic.SetBasicAuth("anyone", "tenant-key-0123456789")
	for _, c := range []struct {
		name string
		r    *http.Request
		want string
	}{
		{"bearer", request("10.0.0.1:1", "Authorization", "Bearer ops-key-0123456789"), "ops"},
		{"basic", basic, "tenant"},
		{"unknown key", request("10.0.0.1:1", "Authorization", "Bearer ops-key-012345678"), ""},
		{"no header, loopback", request("127.0.0.1:1"), ""},
		{"bearer without a key", request("10.0.0.1:1", "Authorization", "Bearer "), ""},
		{"another scheme", request("10.0.0.1:1", "Authorization", "Token ops-key-0123456789"), ""},
	} {
		key, ok := k.Authenticate(c.r)
		switch {
		case c.want == "" && ok:
			t.Errorf("%s: let in as %q", c.name, key.Name)
		case c.want != "" && (!ok || key.Name != c.want):
			t.Errorf("%s: want %q, got ok=%v", c.name, c.want, ok)
		}
	}
	key, _ := k.Authenticate(basic)
	if !key.Accounts.Allows("acme") || !key.Accounts.Allows("shop-7") || key.Accounts.Allows("globex") || key.Accounts.Allows("shop") {
		t.Error("the tenant key's scope is not acme and shop-*")
	}
}

// Without keys only loopback clients get in, and the refusal says how to let others in.
func TestAKeylessRingLetsOnlyLoopbackIn(t *testing.T) {
	k := ring(t, apikey.Options{DefaultRate: 1})
	for _, remote := range []string{"127.0.0.1:5000", "[::1]:5000"} {
		for range 5 { // never rate-limited: the single-machine console
			if _, refused := k.Admit(request(remote)); refused != nil {
				t.Fatalf("%s refused: %+v", remote, refused)
			}
		}
	}
	_, refused := k.Admit(request("192.0.2.7:5000"))
	if refused == nil || refused.Status != http.StatusUnauthorized || !strings.Contains(refused.Detail, "--api-keys") {
		t.Fatalf("a remote client of a keyless ring: %+v", refused)
	}
	var none *apikey.Keyring
	if _, refused := none.Admit(request("192.0.2.7:5000")); refused == nil {
		t.Fatal("a nil ring let a remote client in")
	}
	if _, refused := none.Admit(request("127.0.0.1:5000")); refused != nil {
		t.Fatal("a nil ring refused loopback")
	}
}

// Each key has a token bucket: its rate a second, in bursts of as many; past it 429 with when
// to come back; keys do not share budgets; a reload keeps a key's budget.
func TestRateLimitsAreKeptPerKey(t *testing.T) {
	now := time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC)
	k := ring(t, apikey.Options{DefaultRate: 2, Now: func() time.Time { return now }},
		"a=key-a-0123456789abcdef", "b=key-b-0123456789abcdef", "fast=key-f-0123456789abcdef;rate=10")
	admit := func(key string) *apikey.Refusal {
		_, refused := k.Admit(request("10.0.0.1:1", "Authorization", "Bearer "+key))
		return refused
	}
	for i := range 2 {
		if r := admit("key-a-0123456789abcdef"); r != nil {
			t.Fatalf("request %d of a burst of 2 refused: %+v", i, r)
		}
	}
	r := admit("key-a-0123456789abcdef")
	if r == nil || r.Status != http.StatusTooManyRequests || r.RetryAfter != 500*time.Millisecond {
		t.Fatalf("third request in the same instant at 2/s: %+v", r)
	}
	h := http.Header{}
	r.SetHeaders(h)
	if h.Get("Retry-After") != "1" {
		t.Fatalf("Retry-After %q; want whole seconds, rounded up", h.Get("Retry-After"))
	}
	if r := admit("key-b-0123456789abcdef"); r != nil {
		t.Fatalf("key b paid for key a: %+v", r)
	}
	for i := range 10 {
		if r := admit("key-f-0123456789abcdef"); r != nil {
			t.Fatalf("request %d of the rate=10 key refused: %+v", i, r)
		}
	}
	if admit("key-f-0123456789abcdef") == nil {
		t.Fatal("the rate=10 key made 11 requests in one instant")
	}
	now = now.Add(500 * time.Millisecond)
	if r := admit("key-a-0123456789abcdef"); r != nil {
		t.Fatalf("after half a second at 2/s a request is due: %+v", r)
	}
	if admit("key-a-0123456789abcdef") == nil {
		t.Fatal("two requests after half a second at 2/s")
	}
	keys, _ := apikey.Load("a=key-a-0123456789abcdef,b=key-b-0123456789abcdef")
	if err := k.Replace(keys); err != nil {
		t.Fatal(err)
	}
	if admit("key-a-0123456789abcdef") == nil {
		t.Fatal("a reload gave key a a fresh budget")
	}
	now = now.Add(time.Hour)
	for i := range 2 {
		if r := admit("key-a-0123456789abcdef"); r != nil {
			t.Fatalf("after an hour, request %d: %+v (the bucket holds at most its burst, but that much)", i, r)
		}
	}
	if admit("key-a-0123456789abcdef") == nil {
		t.Fatal("an hour idle saved up more than one burst")
	}
}

// Entries as an operator writes them: rate=, comments in a file, and errors that never show a key.
func TestParseAndLoad(t *testing.T) {
	k, err := apikey.Parse("gw=0123456789abcdef;accounts=acme;rate=0.5")
	if err != nil || k.Rate != 0.5 {
		t.Fatalf("rate=0.5: %+v %v", k, err)
	}
	for _, bad := range []string{"gw=0123456789abcdef;rate=0", "gw=0123456789abcdef;rate=-1", "gw=0123456789abcdef;rate=NaN", "gw=0123456789abcdef;rate=Inf",
		"gw=0123456789abcdef;rate=", "gw=0123456789abcdef;rate=fast"} {
		if _, err := apikey.Parse(bad); err == nil {
			t.Errorf("%q was accepted", bad)
		} else if strings.Contains(err.Error(), "0123456789abcdef") {
			t.Errorf("the error for %q shows the key: %v", bad, err)
		}
	}
	file := filepath.Join(t.TempDir(), "keys")
	if err := os.WriteFile(file, []byte("# tenants\nacme=acme-key-0123456789;accounts=acme\n\n  ops=ops-key-0123456789  \n"), 0o600); err != nil {
		t.Fatal(err)
	}
	keys, err := apikey.Load("@" + file)
	if err != nil || len(keys) != 2 || keys[0].Name != "acme" || keys[1].Name != "ops" {
		t.Fatalf("the file: %+v %v", keys, err)
	}
	if _, err := apikey.Load("@" + file + ".missing"); err == nil {
		t.Fatal("a missing file was no keys")
	}
	if _, err := apikey.NewKeyring(nil, apikey.Options{DefaultRate: -1}); err == nil {
		t.Fatal("a negative default rate was taken")
	}
}

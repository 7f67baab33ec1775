package telemetry

import (
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"testing"
)

// The admin server serves no profiles, and the profiles server never the command line (which
// holds every flag given, secrets included).
func TestProfilesAreApartAndNeverShowTheCommandLine(t *testing.T) {
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	admin := NewAdmin("127.0.0.1:0", NewRegistry(), log)
	profiles := NewProfiles("127.0.0.1:0", log)
	get := func(a *Admin, path string) int {
		rec := httptest.NewRecorder()
		a.server.Handler.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, path, nil))
		return rec.Code
	}
	for _, path := range []string{"/debug/pprof/", "/debug/pprof/cmdline", "/debug/pprof/heap"} {
		if code := get(admin, path); code != http.StatusNotFound {
			t.Errorf("admin server %s: %d; want 404", path, code)
		}
	}
	if code := get(admin, "/metrics"); code != http.StatusOK {
		t.Errorf("admin server /metrics: %d", code)
	}
	if code := get(profiles, "/debug/pprof/cmdline"); code != http.StatusNotFound {
		t.Errorf("profiles server /debug/pprof/cmdline: %d; want 404", code)
	}
	for _, path := range []string{"/debug/pprof/", "/debug/pprof/heap", "/debug/pprof/goroutine"} {
		if code := get(profiles, path); code != http.StatusOK {
			t.Errorf("profiles server %s: %d; want 200", path, code)
		}
	}
}

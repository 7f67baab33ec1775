package worker_test

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// chromium finds the browser the browser tests drive: $TALLY_CHROMIUM, else Debian's.
func chromium(t *testing.T) string {
	t.Helper()
	if p := os.Getenv("TALLY_CHROMIUM"); p != "" {
		return p
	}
	if _, err := os.Stat("/usr/bin/chromium"); err != nil {
		t.Fatal("no Chromium at /usr/bin/chromium: run `make browser` (Debian's chromium, pinned in deploy/local/versions.env) or set TALLY_CHROMIUM")
	}
	return "/usr/bin/chromium"
}

// headless runs Chromium on url with the flags this machine's closed network needs (no
// background connections), with extra arguments, and returns what it printed.
func headless(t *testing.T, url string, extra ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	args := append([]string{"--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
		"--disable-component-update", "--disable-sync", "--disable-dev-shm-usage", "--user-data-dir=" + t.TempDir()}, extra...)
	out, err := exec.CommandContext(ctx, chromium(t), append(args, url)...).Output()
	if err != nil {
		t.Fatalf("chromium %v: %v", extra, err)
	}
	return string(out)
}

// checkAccountPage loads /accounts/{account} of api over HTTP and in headless Chromium, and
// holds the rendered DOM to what wants says (substrings of the serialised DOM, in order per
// entry). With TALLY_SCREENSHOT=FILE it also writes a screenshot (the README's picture).
func checkAccountPage(t *testing.T, api http.Handler, account string, wants []string) {
	t.Helper()
	srv := httptest.NewServer(api)
	defer srv.Close()
	url := srv.URL + "/accounts/" + account
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/html") ||
		!strings.Contains(resp.Header.Get("Content-Security-Policy"), "default-src 'none'") {
		t.Fatalf("GET %s: %d %s %q\n%s", url, resp.StatusCode, resp.Header.Get("Content-Type"), resp.Header.Get("Content-Security-Policy"), body)
	}
	if strings.Contains(string(body), "http://") || strings.Contains(string(body), "https://") {
		t.Fatalf("the page refers to something outside itself:\n%s", body)
	}
	dom := headless(t, url, "--dump-dom")
	for _, want := range wants {
		if !strings.Contains(dom, want) {
			t.Fatalf("the DOM Chromium rendered lacks %q:\n%s", want, dom)
		}
	}
	if shot := os.Getenv("TALLY_SCREENSHOT"); shot != "" {
		abs, _ := filepath.Abs(shot)
		headless(t, url, "--screenshot="+abs, "--window-size=960,1900", "--hide-scrollbars")
		if st, err := os.Stat(abs); err != nil || st.Size() == 0 {
			t.Fatalf("no screenshot at %s: %v", abs, err)
		}
	}
}

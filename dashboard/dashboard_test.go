package dashboard

import (
	"io/fs"
	"regexp"
	"strings"
	"testing"

	"github.com/valyala/fasthttp"
)

func serve(path string, hdr ...string) *fasthttp.Response {
	var ctx fasthttp.RequestCtx
	ctx.Request.SetRequestURI(path)
	for i := 0; i+1 < len(hdr); i += 2 {
		ctx.Request.Header.Set(hdr[i], hdr[i+1])
	}
	Handler(&ctx)
	var resp fasthttp.Response
	ctx.Response.CopyTo(&resp)
	return &resp
}

func TestHandler(t *testing.T) {
	f := func(path string, status int, contentType, location string) {
		t.Helper()
		resp := serve(path)
		if got := resp.StatusCode(); got != status {
			t.Fatalf("%s: status %d, want %d", path, got, status)
		}
		if got := string(resp.Header.ContentType()); status == fasthttp.StatusOK && got != contentType {
			t.Fatalf("%s: content type %q, want %q", path, got, contentType)
		}
		if got := string(resp.Header.Peek("Location")); got != location {
			t.Fatalf("%s: location %q, want %q", path, got, location)
		}
		for name, want := range map[string]string{
			"Content-Security-Policy": contentSecurityPolicy,
			"X-Content-Type-Options":  "nosniff",
			"Referrer-Policy":         "no-referrer",
			"X-Frame-Options":         "DENY",
		} {
			if got := string(resp.Header.Peek(name)); got != want {
				t.Fatalf("%s: %s %q, want %q", path, name, got, want)
			}
		}
	}
	f("/dashboard", fasthttp.StatusFound, "", "/dashboard/keys")
	f("/dashboard/", fasthttp.StatusFound, "", "/dashboard/keys")
	f("/dashboard/keys", fasthttp.StatusOK, "text/html; charset=utf-8", "")
	f("/dashboard/static/app.js", fasthttp.StatusOK, "text/javascript; charset=utf-8", "")
	f("/dashboard/static/app.css", fasthttp.StatusOK, "text/css; charset=utf-8", "")
	// The page is served at its URL only, and nothing outside static/ is.
	f("/dashboard/static/index.html", fasthttp.StatusNotFound, "", "")
	f("/dashboard/static/", fasthttp.StatusNotFound, "", "")
	f("/dashboard/static/../dashboard.go", fasthttp.StatusNotFound, "", "")
	f("/dashboard/keys/", fasthttp.StatusNotFound, "", "")
	f("/dashboard/plans", fasthttp.StatusNotFound, "", "")
}

func TestPageIsNeverStored(t *testing.T) {
	if got := string(serve("/dashboard/keys").Header.Peek("Cache-Control")); got != "no-store" {
		t.Fatalf("Cache-Control %q, want no-store", got)
	}
}

func TestAssetRevalidates(t *testing.T) {
	resp := serve("/dashboard/static/app.js")
	etag := string(resp.Header.Peek("ETag"))
	if etag == "" || string(resp.Header.Peek("Cache-Control")) != "no-cache" {
		t.Fatalf("ETag %q, Cache-Control %q: want an ETag and no-cache", etag, resp.Header.Peek("Cache-Control"))
	}
	if got := serve("/dashboard/static/app.js", "If-None-Match", etag); got.StatusCode() != fasthttp.StatusNotModified || len(got.Body()) != 0 {
		t.Fatalf("If-None-Match with the ETag: status %d with %d bytes, want 304 and none", got.StatusCode(), len(got.Body()))
	}
	if got := serve("/dashboard/static/app.js", "If-None-Match", `"other"`); got.StatusCode() != fasthttp.StatusOK {
		t.Fatalf("If-None-Match with another ETag: status %d, want 200", got.StatusCode())
	}
}

var scriptTag = regexp.MustCompile(`(?s)<script([^>]*)>(.{0,9})`)

// TestStaticFilesKeepThePolicy checks the embedded files for what the CSP or
// the page's escaping rule forbids, so a slip fails here with its file name
// instead of as a silently blocked script in a browser.
func TestStaticFilesKeepThePolicy(t *testing.T) {
	forbidden := map[string]*regexp.Regexp{
		// A script element is allowed only as <script src=…></script>, below.
		".html": regexp.MustCompile(`\son[a-z]+\s*=|\sstyle\s*=|<style|javascript:|https?://`),
		".js":   regexp.MustCompile(`innerHTML|outerHTML|insertAdjacentHTML|document\.write|\beval\(|new Function|setTimeout\(\s*['"]|https?://`),
		".css":  regexp.MustCompile(`@import|url\(|https?://`),
	}
	err := fs.WalkDir(static, "static", func(name string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		re := forbidden[name[strings.LastIndexByte(name, '.'):]]
		if re == nil {
			t.Errorf("%s: no rule for this kind of file", name)
			return nil
		}
		body, err := static.ReadFile(name)
		if err != nil {
			return err
		}
		if m := re.Find(body); m != nil {
			t.Errorf("%s contains %q, which the page's Content-Security-Policy or escaping rule forbids", name, m)
		}
		for _, m := range scriptTag.FindAllSubmatch(body, -1) {
			if !strings.Contains(string(m[1]), " src=") || string(m[2]) != "</script>" {
				t.Errorf("%s has an inline script %q: the Content-Security-Policy blocks it; use a file", name, m[0])
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

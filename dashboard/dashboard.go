// Package dashboard is the operators' web page for tokenhub's Keys and Plans
// APIs: plain HTML, JavaScript and CSS embedded in the binary, so it needs no
// build step and no files next to the executable.
//
// The page holds no server-side state. The operator signs in by typing the
// admin key, which the page keeps in the tab's sessionStorage and sends as
// "Authorization: Bearer" to the same /v1 admin API any client uses; with no
// cookies there is nothing for another site to forge (no CSRF). Every answer
// carries a strict Content-Security-Policy (no inline script, same-origin
// only), so text from the API can never run as code.
package dashboard

import (
	"crypto/sha256"
	"embed"
	"encoding/base64"
	"io/fs"
	"path"
	"strings"

	"github.com/valyala/fasthttp"
)

// Paths the dashboard answers. Register Handler for PathRoot and everything
// under it.
const (
	PathRoot   = "/dashboard"
	PathKeys   = "/dashboard/keys"
	pathStatic = "/dashboard/static/"
)

//go:embed static
var static embed.FS

// contentSecurityPolicy allows only the page's own files: no inline script or
// style, no other origin, no framing, no plugins, and no form submission,
// so that even with scripts blocked the sign-in form cannot send the admin
// key anywhere.
const contentSecurityPolicy = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self'; " +
	"connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"

// asset is one embedded file, ready to serve.
type asset struct {
	body        []byte
	contentType string
	etag        string
}

var contentTypes = map[string]string{
	".html": "text/html; charset=utf-8",
	".js":   "text/javascript; charset=utf-8",
	".css":  "text/css; charset=utf-8",
}

var (
	page   asset            // index.html, served at PathKeys
	assets map[string]asset // by file name, served under pathStatic
)

func init() {
	assets = make(map[string]asset)
	err := fs.WalkDir(static, "static", func(name string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		body, err := static.ReadFile(name)
		if err != nil {
			return err
		}
		ct, ok := contentTypes[path.Ext(name)]
		if !ok {
			panic("dashboard: no content type for embedded file " + name)
		}
		sum := sha256.Sum256(body)
		assets[strings.TrimPrefix(name, "static/")] = asset{body: body, contentType: ct,
			etag: `"` + base64.RawURLEncoding.EncodeToString(sum[:12]) + `"`}
		return nil
	})
	if err != nil {
		panic("dashboard: reading embedded files: " + err.Error())
	}
	var ok bool
	if page, ok = assets["index.html"]; !ok {
		panic("dashboard: static/index.html is not embedded")
	}
	delete(assets, "index.html")
}

// Handler serves the dashboard: the keys page at PathKeys, its scripts and
// styles under /dashboard/static/, and a redirect to the page from
// /dashboard and /dashboard/. Anything else under /dashboard is a plain 404.
// It reads the path itself, so it needs no router parameters. (fasthttp/router
// files /dashboard/ under /dashboard as a trailing-slash variant; with
// RedirectTrailingSlash off it answers /dashboard/ itself, with a 404.)
func Handler(ctx *fasthttp.RequestCtx) {
	setSecurityHeaders(&ctx.Response.Header)
	p := string(ctx.Path())
	switch {
	case p == PathRoot || p == PathRoot+"/":
		// Relative to the host the browser used, which may be a proxy's.
		ctx.Response.Header.Set(fasthttp.HeaderLocation, PathKeys)
		ctx.SetStatusCode(fasthttp.StatusFound)
	case p == PathKeys:
		// The page itself is never stored: with no-store the browser also keeps
		// it out of the back/forward cache, so a secret shown once cannot come
		// back with the Back button.
		ctx.Response.Header.Set(fasthttp.HeaderCacheControl, "no-store")
		ctx.SetContentType(page.contentType)
		ctx.SetBody(page.body)
	case strings.HasPrefix(p, pathStatic):
		a, ok := assets[p[len(pathStatic):]]
		if !ok {
			notFound(ctx)
			return
		}
		// Assets change only with the binary: revalidate, and let the ETag
		// make that a 304.
		ctx.Response.Header.Set(fasthttp.HeaderCacheControl, "no-cache")
		ctx.Response.Header.Set(fasthttp.HeaderETag, a.etag)
		if string(ctx.Request.Header.Peek(fasthttp.HeaderIfNoneMatch)) == a.etag {
			ctx.SetStatusCode(fasthttp.StatusNotModified)
			return
		}
		ctx.SetContentType(a.contentType)
		ctx.SetBody(a.body)
	default:
		notFound(ctx)
	}
}

func setSecurityHeaders(h *fasthttp.ResponseHeader) {
	h.Set("Content-Security-Policy", contentSecurityPolicy)
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Referrer-Policy", "no-referrer")
	h.Set("X-Frame-Options", "DENY")
}

func notFound(ctx *fasthttp.RequestCtx) {
	ctx.SetStatusCode(fasthttp.StatusNotFound)
	ctx.SetContentType("text/plain; charset=utf-8")
	ctx.SetBodyString("404 page not found\n")
}

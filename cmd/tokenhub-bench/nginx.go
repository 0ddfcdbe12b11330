package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
)

// startNginx runs nginx from bin as a keep-alive reverse proxy to the mock,
// the baseline a gateway's overhead is judged against, with everything it
// writes inside dir.
func startNginx(ctx context.Context, bin, dir, mockAddr string) (proc *process, addr string, err error) {
	if addr, err = freeAddr(); err != nil {
		return nil, "", err
	}
	if err := os.MkdirAll(filepath.Join(dir, "logs"), 0o700); err != nil {
		return nil, "", fmt.Errorf("nginx: %w", err)
	}
	if err := os.WriteFile(filepath.Join(dir, "nginx.conf"), nginxConfig(dir, addr, mockAddr), 0o600); err != nil {
		return nil, "", fmt.Errorf("nginx: write config: %w", err)
	}
	proc, err = startProcess("nginx", filepath.Join(dir, "nginx.log"), bin, "-p", dir, "-c", "nginx.conf")
	if err != nil {
		return nil, "", err
	}
	// The mock answers GET /v1/models: a 200 through nginx proves both are up.
	if err := readyOrStop(ctx, proc, "http://"+addr+"/v1/models"); err != nil {
		return nil, "", err
	}
	return proc, addr, nil
}

// nginxConfig proxies addr to the mock the way a tuned production nginx
// would: upstream keep-alive, HTTP/1.1 to the upstream, no access log, no
// buffering (so streams pass through as they come), and no cap on requests
// per connection, which would otherwise make both sides reconnect every 1000
// requests. One worker per core, as tokenhub gets.
func nginxConfig(dir, addr, mockAddr string) []byte {
	p := func(name string) string { return filepath.Join(dir, name) }
	r := strings.NewReplacer(
		"{PID}", p("nginx.pid"), "{ERRLOG}", p("logs/error.log"), "{TMP}", dir,
		"{LISTEN}", addr, "{MOCK}", mockAddr,
	)
	return []byte(r.Replace(`# Written by tokenhub-bench.
daemon off;
master_process on;
worker_processes auto;
pid {PID};
error_log {ERRLOG} warn;

events {
    worker_connections 4096;
}

http {
    access_log off;
    client_body_temp_path {TMP}/client_body;
    proxy_temp_path {TMP}/proxy;
    fastcgi_temp_path {TMP}/fastcgi;
    uwsgi_temp_path {TMP}/uwsgi;
    scgi_temp_path {TMP}/scgi;
    keepalive_requests 1000000;
    keepalive_timeout 120s;

    upstream mock {
        server {MOCK};
        keepalive 256;
        keepalive_requests 1000000;
    }

    server {
        listen {LISTEN};
        location / {
            proxy_pass http://mock;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_buffering off;
        }
    }
}
`))
}

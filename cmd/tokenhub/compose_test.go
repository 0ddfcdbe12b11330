package main

import (
	"bytes"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/tokenhub/tokenhub/config"
)

// composeFile is the part of the Compose format config/compose.yaml uses;
// decoding rejects any other key, so a misspelt one fails here rather than
// being ignored by compose.
type composeFile struct {
	Name     string
	Services map[string]composeService
	Volumes  map[string]any
}

type composeService struct {
	Image           string
	PullPolicy      string `yaml:"pull_policy"`
	Command         []string
	Environment     map[string]string
	Volumes         []string
	Ports           []string
	DependsOn       []string `yaml:"depends_on"`
	StopGracePeriod string   `yaml:"stop_grace_period"`
	Restart         string
}

// TestComposeFile checks config/compose.yaml, which cannot be run here,
// against what it names: the image make image builds (its volume and port),
// the node config it mounts (loaded as tokenhub would, with exactly the
// environment compose gives the container) and the Valkey service that config
// points at, with the same password. Each node keeps its journal in a volume
// of its own, and is given time to drain on stop.
func TestComposeFile(t *testing.T) {
	data, err := os.ReadFile("../../config/compose.yaml")
	if err != nil {
		t.Fatal(err)
	}
	// What the operator exports before `compose up` (see the file's header).
	shell := map[string]string{"TOKENHUB_ADMIN_KEY": "0123456789abcdef0123", "VALKEY_PASSWORD": "valkey-secret"}
	var compose composeFile
	dec := yaml.NewDecoder(bytes.NewReader([]byte(composeInterpolate(t, string(data), shell))))
	dec.KnownFields(true)
	if err := dec.Decode(&compose); err != nil {
		t.Fatalf("config/compose.yaml: %v", err)
	}

	var valkeyName string
	var nodes []string
	for name, s := range compose.Services {
		switch {
		case strings.HasPrefix(s.Image, "docker.io/valkey/valkey:"):
			if valkeyName != "" {
				t.Fatalf("two Valkey services, %s and %s", valkeyName, name)
			}
			valkeyName = name
		case s.Image == makefileImage(t):
			nodes = append(nodes, name)
		default:
			t.Errorf("service %s: image %q is neither Valkey nor make image's %q", name, s.Image, makefileImage(t))
		}
	}
	slices.Sort(nodes)
	if valkeyName == "" || len(nodes) < 2 {
		t.Fatalf("services: Valkey %q and tokenhub nodes %q; want one Valkey and two nodes or more", valkeyName, nodes)
	}
	valkey := compose.Services[valkeyName]
	if len(valkey.Command) < 3 || !slices.Equal(valkey.Command[:3], []string{"valkey-server", "--appendonly", "yes"}) {
		t.Errorf("valkey command %q: want valkey-server --appendonly yes (it holds every key)", valkey.Command)
	}
	password := ""
	if i := slices.Index(valkey.Command, "--requirepass"); i > 0 && i+1 < len(valkey.Command) {
		password = valkey.Command[i+1]
	}
	if password != shell["VALKEY_PASSWORD"] {
		t.Errorf("valkey command %q: want --requirepass ${VALKEY_PASSWORD}", valkey.Command)
	}

	dataVolumes, hostPorts := map[string]string{}, map[string]string{}
	for _, name := range nodes {
		s := compose.Services[name]
		errorf := func(format string, args ...any) {
			t.Helper()
			t.Errorf("service %s: "+format, append([]any{name}, args...)...)
		}
		if s.PullPolicy != "never" {
			errorf("pull_policy %q: want never (the image is built here, never pulled)", s.PullPolicy)
		}
		if !slices.Contains(s.DependsOn, valkeyName) {
			errorf("depends_on %q: want %s", s.DependsOn, valkeyName)
		}
		if len(s.Command) != 2 || s.Command[0] != "-config" {
			errorf("command %q: want [-config FILE]", s.Command)
			continue
		}
		mounts := map[string]string{} // container path -> source
		for _, v := range s.Volumes {
			parts := strings.Split(v, ":")
			if len(parts) < 2 {
				errorf("volume %q is not SOURCE:TARGET", v)
				continue
			}
			mounts[parts[1]] = parts[0]
			if strings.HasPrefix(parts[0], ".") && (len(parts) != 3 || parts[2] != "ro") {
				errorf("volume %q: mount files from the host read-only (:ro)", v)
			}
		}
		source := mounts[s.Command[1]]
		if !strings.HasPrefix(source, "./") {
			errorf("%s is not mounted from a file beside compose.yaml (mounts %q)", s.Command[1], mounts)
			continue
		}
		nodeYAML, err := os.ReadFile(filepath.Join("../../config", source))
		if err != nil {
			errorf("%v", err)
			continue
		}
		volume := mounts[imageDataDir]
		if _, declared := compose.Volumes[volume]; !declared || volume == "" {
			errorf("no named volume at the image's %s (mounts %q)", imageDataDir, mounts)
		} else if other, shared := dataVolumes[volume]; shared {
			errorf("shares its data volume %s with %s: two live nodes on one journal", volume, other)
		}
		dataVolumes[volume] = name

		// The node config, loaded with the container's environment only: a
		// ${NAME} it needs that compose does not pass is an error here.
		c, err := config.Parse(nodeYAML, source, func(k string) string {
			v, ok := s.Environment[k]
			if !ok {
				errorf("%s uses ${%s}, which the service's environment does not set", source, k)
			}
			return v
		})
		if err != nil {
			errorf("%v", err)
			continue
		}
		if c.Store.Path != imageDataDir {
			errorf("store.path %q: want the image's volume %s", c.Store.Path, imageDataDir)
		}
		if v := c.Store.Valkey; v == nil || !slices.Equal(v.Addrs, []string{valkeyName + ":6379"}) || v.Password != password {
			errorf("store.valkey %+v: want addrs [%s:6379] with the password valkey requires", v, valkeyName)
		}
		published := func(field, addr string, loopbackOnly bool) {
			t.Helper()
			host, port, err := net.SplitHostPort(addr)
			if err != nil || !net.ParseIP(host).IsUnspecified() {
				errorf("%s %q: want every interface of the container", field, addr)
				return
			}
			for _, p := range s.Ports {
				parts := strings.Split(p, ":")
				if parts[len(parts)-1] != port {
					continue
				}
				if loopbackOnly && (len(parts) != 3 || parts[0] != "127.0.0.1") {
					errorf("port %q of %s: publish it on 127.0.0.1 only", p, field)
				}
				if other, taken := hostPorts[parts[len(parts)-2]]; taken {
					errorf("port %q: host port also published by %s", p, other)
				}
				hostPorts[parts[len(parts)-2]] = name
				return
			}
			errorf("%s %q is not published (ports %q)", field, addr, s.Ports)
		}
		published("listen", c.Listen, false)
		if _, port, _ := net.SplitHostPort(c.Listen); port+"/tcp" != imagePort {
			errorf("listen %q is not the image's EXPOSE %s", c.Listen, imagePort)
		}
		if c.Admin.Listen == "" {
			errorf("admin.listen is empty: the admin API and /metrics would be published with the API")
		} else {
			published("admin.listen", c.Admin.Listen, true)
		}
		if grace, err := time.ParseDuration(s.StopGracePeriod); err != nil || grace <= c.Server.ShutdownTimeout {
			errorf("stop_grace_period %q: want more than server.shutdown_timeout (%v), so a drain ends before SIGKILL", s.StopGracePeriod, c.Server.ShutdownTimeout)
		}
	}
}

// makefileImage is the Makefile's default IMAGE, the tag make image gives.
func makefileImage(t *testing.T) string {
	t.Helper()
	mk, err := os.ReadFile("../../Makefile")
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile(`(?m)^IMAGE\s*\?=\s*(\S+)$`).FindSubmatch(mk)
	if m == nil {
		t.Fatal("Makefile: no `IMAGE ?= ...` line")
	}
	return string(m[1])
}

// composeInterpolate does what compose does to its file before reading it:
// ${NAME}, ${NAME:-default} and ${NAME:?error} from the shell's environment.
// An unset ${NAME:?...} fails the test, as it fails `compose up`.
func composeInterpolate(t *testing.T, s string, env map[string]string) string {
	t.Helper()
	return composeVar.ReplaceAllStringFunc(s, func(ref string) string {
		m := composeVar.FindStringSubmatch(ref)
		if v := env[m[1]]; v != "" {
			return v
		}
		if m[2] == ":?" {
			t.Errorf("compose.yaml needs %s: %s", m[1], m[3])
		}
		return m[3]
	})
}

var composeVar = regexp.MustCompile(`\$\{([A-Za-z_][A-Za-z0-9_]*)(?:(:-|:\?)([^}]*))?\}`)

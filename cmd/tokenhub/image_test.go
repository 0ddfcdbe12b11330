package main

import (
	"archive/tar"
	"bufio"
	"bytes"
	"compress/gzip"
	"context"
	"crypto/x509"
	"debug/elf"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/tokenhub/tokenhub/config"
)

// What the container image promises (cmd/tokenhub/Containerfile): the README's
// run commands and config/compose.yaml rely on these.
const (
	imageBinary   = "/tokenhub"
	imageDataDir  = "/data" // the VOLUME: the embedded store, admin.key, the journal
	imagePort     = "8080/tcp"
	imageUID      = 65532 // the non-root user, named tokenhub in /etc/passwd
	imageCABundle = "/etc/ssl/certs/ca-certificates.crt"
	imageSource   = "https://github.com/tokenhub/tokenhub"
)

// containerEngine is what `make image` would build with: podman (Debian's
// package, daemonless), else docker when its daemon answers (the docker
// client alone, without an engine, cannot build).
func containerEngine(t *testing.T) string {
	t.Helper()
	if p, err := exec.LookPath("podman"); err == nil {
		return p
	}
	reason := "neither podman nor docker is installed"
	if p, err := exec.LookPath("docker"); err == nil {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		if exec.CommandContext(ctx, p, "info").Run() == nil {
			return p
		}
		reason = "docker is installed but no Docker engine answers"
	}
	if os.Getenv("CI") == "true" {
		t.Fatalf("%s; under CI=true the image must be built (.ci/install-deps installs podman)", reason)
	}
	t.Skipf("%s: the container image is not built (`make deps` installs podman)", reason)
	return ""
}

// imageConfig is the part of `podman/docker image inspect` the image's
// contract is about.
type imageConfig struct {
	User         string
	ExposedPorts map[string]struct{}
	Volumes      map[string]struct{}
	Entrypoint   []string
	Cmd          []string
	Env          []string
	WorkingDir   string
	Labels       map[string]string
}

// TestImage builds the image with `make image` (the real target, with a tag
// of its own) and checks what it holds, without running a container (this
// machine cannot): a static binary as the entrypoint, run as a non-root user
// that owns the data volume, the port, the CA bundle, and nothing else; and
// the embedded config, under the image's environment, listening on every
// interface at the exposed port and storing in the volume.
func TestImage(t *testing.T) {
	if testing.Short() {
		t.Skip("builds a container image (about a minute)")
	}
	engine := containerEngine(t)
	ctx, cancel := context.WithTimeout(context.Background(), 8*time.Minute)
	defer cancel()

	unique := fmt.Sprintf("%d-%d", os.Getpid(), time.Now().UnixNano())
	tag := "localhost/tokenhub-test:" + unique
	version := "v0.0.0-test-" + unique
	work := t.TempDir()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		if out, err := exec.CommandContext(ctx, engine, "image", "rm", "--force", tag).CombinedOutput(); err != nil {
			t.Errorf("removing the test image %s: %v\n%s", tag, err, out)
		}
		// Nothing of this build may stay behind in the machine's image store.
		left := mustRun(ctx, t, engine, "image", "ls", "--all", "--quiet", "--filter", "label=org.opencontainers.image.version="+version)
		if len(bytes.TrimSpace(left)) > 0 {
			t.Errorf("images of the test build left after removing it: %s", left)
		}
	})

	makeArgs := []string{"-C", "../..", "image", "IMAGE=" + tag, "VERSION=" + version,
		"CONTAINER_ENGINE=" + engine, "IMAGE_CONTEXT=" + filepath.Join(work, "context")}
	if filepath.Base(engine) == "podman" {
		// Without intermediate images, removing the tag removes the whole build.
		makeArgs = append(makeArgs, "IMAGE_BUILD_FLAGS=--layers=false")
	}
	start := time.Now()
	mustRun(ctx, t, "make", makeArgs...)
	t.Logf("make image with %s: %v", filepath.Base(engine), time.Since(start).Round(time.Second))

	// The image's configuration.
	var inspected []struct{ Config imageConfig }
	if err := json.Unmarshal(mustRun(ctx, t, engine, "image", "inspect", tag), &inspected); err != nil || len(inspected) != 1 {
		t.Fatalf("image inspect %s: %d images, %v", tag, len(inspected), err)
	}
	cfg := inspected[0].Config
	uid, gid, err := numericUser(cfg.User)
	if err != nil || uid != imageUID || gid != imageUID {
		t.Errorf("USER %q: want %d:%d, numeric so that runAsNonRoot can verify it is not root (%v)", cfg.User, imageUID, imageUID, err)
	}
	if !slices.Equal(mapKeys(cfg.ExposedPorts), []string{imagePort}) {
		t.Errorf("EXPOSE %q, want only %s", mapKeys(cfg.ExposedPorts), imagePort)
	}
	if !slices.Equal(mapKeys(cfg.Volumes), []string{imageDataDir}) {
		t.Errorf("VOLUME %q, want only %s", mapKeys(cfg.Volumes), imageDataDir)
	}
	if !slices.Equal(cfg.Entrypoint, []string{imageBinary}) || len(cfg.Cmd) != 0 {
		t.Errorf("ENTRYPOINT %q CMD %q: want [%s] and no CMD, so that `run IMAGE -config FILE` passes its arguments to tokenhub", cfg.Entrypoint, cfg.Cmd, imageBinary)
	}
	for label, want := range map[string]string{
		"org.opencontainers.image.version":  version,
		"org.opencontainers.image.source":   imageSource,
		"org.opencontainers.image.revision": strings.TrimSpace(string(mustRun(ctx, t, "git", "rev-parse", "HEAD"))),
		"org.opencontainers.image.title":    "tokenhub",
	} {
		if got := cfg.Labels[label]; got != want {
			t.Errorf("LABEL %s = %q, want %q", label, got, want)
		}
	}
	checkEmbeddedConfigInImage(t, cfg)
	if filepath.Base(engine) == "podman" {
		checkNewVolume(ctx, t, engine, tag, "tokenhub-test-"+unique)
	}

	// The image's files, read from `image save` (every layer, in order), as
	// a container created from it would see them.
	archive := filepath.Join(work, "image.tar")
	mustRun(ctx, t, engine, "image", "save", "-o", archive, tag)
	files, err := imageFiles(archive)
	if err != nil {
		t.Fatalf("reading the saved image: %v", err)
	}
	var names []string
	for name := range files {
		names = append(names, name)
	}
	slices.Sort(names)
	want := []string{"data/", "etc/", "etc/group", "etc/passwd", "etc/ssl/", "etc/ssl/certs/", "etc/ssl/certs/ca-certificates.crt", "tokenhub"}
	if !slices.Equal(names, want) {
		t.Fatalf("the image holds\n\t%s\nwant exactly\n\t%s", strings.Join(names, "\n\t"), strings.Join(want, "\n\t"))
	}
	f := func(name string, wantUID int, wantMode os.FileMode) *imageFile {
		t.Helper()
		file := files[name]
		if file.uid != wantUID || file.mode != wantMode {
			t.Errorf("%s: owner %d mode %v, want owner %d mode %v", name, file.uid, file.mode, wantUID, wantMode)
		}
		return file
	}
	// The binary and the files it trusts belong to root: the user it runs as
	// cannot change them. The data directory belongs to that user, so that a
	// new volume mounted there (which takes the directory's owner) is writable.
	binary := f("tokenhub", 0, 0o755)
	f("data/", imageUID, os.ModeDir|0o700)
	passwd := f("etc/passwd", 0, 0o644)
	group := f("etc/group", 0, 0o644)
	ca := f("etc/ssl/certs/ca-certificates.crt", 0, 0o644)

	checkStaticBinary(ctx, t, binary.data, filepath.Join(work, "tokenhub"), version)
	if entry := fileEntry(passwd.data, imageUID, 2); len(entry) != 7 || entry[0] != "tokenhub" || entry[3] != strconv.Itoa(imageUID) || entry[5] != imageDataDir {
		t.Errorf("/etc/passwd has no tokenhub user with uid and gid %d and home %s:\n%s", imageUID, imageDataDir, passwd.data)
	}
	if entry := fileEntry(group.data, imageUID, 2); len(entry) != 4 || entry[0] != "tokenhub" {
		t.Errorf("/etc/group has no tokenhub group with gid %d:\n%s", imageUID, group.data)
	}
	host, err := os.ReadFile(imageCABundle)
	if err != nil {
		t.Fatalf("the host's CA bundle, which make image copies: %v", err)
	}
	if !bytes.Equal(ca.data, host) || !x509.NewCertPool().AppendCertsFromPEM(ca.data) {
		t.Errorf("%s: %d bytes, not the host's %d-byte bundle of PEM certificates", imageCABundle, len(ca.data), len(host))
	}
}

// checkEmbeddedConfigInImage loads the embedded config with the image's
// environment, as the entrypoint without -config does: it must listen on every
// interface at the exposed port and keep its store and journal in the volume.
func checkEmbeddedConfigInImage(t *testing.T, img imageConfig) {
	t.Helper()
	env := map[string]string{}
	for _, kv := range img.Env {
		k, v, _ := strings.Cut(kv, "=")
		env[k] = v
	}
	c, err := config.Parse(config.Default(), "default.yaml (built in)", func(k string) string { return env[k] })
	if err != nil {
		t.Fatalf("the embedded config under the image's environment %q: %v", img.Env, err)
	}
	host, port, err := net.SplitHostPort(c.Listen)
	if err != nil || net.ParseIP(host) == nil || !net.ParseIP(host).IsUnspecified() || port+"/tcp" != imagePort {
		t.Errorf("in the image the embedded config listens on %q: want every interface at %s (ENV TOKENHUB_LISTEN)", c.Listen, imagePort)
	}
	dir := img.WorkingDir
	if dir == "" {
		dir = "/"
	}
	within := func(p string) bool {
		p = path.Join(dir, p)
		return p == imageDataDir || strings.HasPrefix(p, imageDataDir+"/")
	}
	if !within(c.Store.Path) || !within(c.Store.JournalDir()) {
		t.Errorf("in the image (WORKDIR %s) store.path %q and the journal %q are not in the volume %s", dir, c.Store.Path, c.Store.JournalDir(), imageDataDir)
	}
	if c.Admin.Listen != "" || c.AdminKey != "" {
		t.Errorf("the embedded config sets admin.listen %q or an admin key: the README's run commands assume neither", c.Admin.Listen)
	}
}

// checkNewVolume checks that a named volume new to a container of the image
// is writable by the user it runs as: the engine copies the owner and mode of
// the image's /data into it when the container is initialised. `podman init`
// does that even where it then cannot set the container up (here crun is
// refused setrlimit): the volume is populated before.
func checkNewVolume(ctx context.Context, t *testing.T, engine, tag, name string) {
	t.Helper()
	volume := name + "-data"
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		exec.CommandContext(ctx, engine, "container", "rm", "--force", name).Run()
		if out, err := exec.CommandContext(ctx, engine, "volume", "rm", "--force", volume).CombinedOutput(); err != nil {
			t.Errorf("removing the test volume %s: %v\n%s", volume, err, out)
		}
	})
	mustRun(ctx, t, engine, "container", "create", "--name", name, "--volume", volume+":"+imageDataDir, tag)
	initOut, initErr := exec.CommandContext(ctx, engine, "container", "init", name).CombinedOutput()
	mountpoint := strings.TrimSpace(string(mustRun(ctx, t, engine, "volume", "inspect", "--format", "{{.Mountpoint}}", volume)))
	got := strings.TrimSpace(string(mustRun(ctx, t, "stat", "--format", "%u:%g %a", mountpoint)))
	if want := fmt.Sprintf("%d:%d 700", imageUID, imageUID); got != want {
		t.Errorf("a new volume at %s: owner and mode %s, want %s (podman init: %v %s)", imageDataDir, got, want, initErr, initOut)
	}
}

// checkStaticBinary checks that the image's binary needs no dynamic loader or
// library (scratch has none: a cgo build would fail with "no such file or
// directory" at start) and that it is this build's, by running it here.
func checkStaticBinary(ctx context.Context, t *testing.T, binary []byte, file, version string) {
	t.Helper()
	bin, err := elf.NewFile(bytes.NewReader(binary))
	if err != nil {
		t.Fatalf("/tokenhub is not an ELF file: %v", err)
	}
	for _, p := range bin.Progs {
		if p.Type == elf.PT_INTERP {
			t.Errorf("/tokenhub asks for a dynamic loader (PT_INTERP): build it with CGO_ENABLED=0")
		}
	}
	if libs, _ := bin.ImportedLibraries(); len(libs) > 0 {
		t.Errorf("/tokenhub needs shared libraries %q: build it with CGO_ENABLED=0", libs)
	}
	if err := os.WriteFile(file, binary, 0o755); err != nil {
		t.Fatal(err)
	}
	if out := mustRun(ctx, t, file, "version"); string(out) != "tokenhub "+version+"\n" {
		t.Errorf("/tokenhub version printed %q, want the version make image was given, %q", out, version)
	}
}

// numericUser parses USER "uid:gid" (or "uid", gid the same).
func numericUser(user string) (uid, gid int, err error) {
	u, g, found := strings.Cut(user, ":")
	if uid, err = strconv.Atoi(u); err != nil {
		return 0, 0, fmt.Errorf("user %q is not numeric", u)
	}
	if !found {
		return uid, uid, nil
	}
	if gid, err = strconv.Atoi(g); err != nil {
		return 0, 0, fmt.Errorf("group %q is not numeric", g)
	}
	return uid, gid, nil
}

// fileEntry returns the fields of the line of a passwd or group file whose
// field idField is id.
func fileEntry(data []byte, id, idField int) []string {
	s := bufio.NewScanner(bytes.NewReader(data))
	for s.Scan() {
		fields := strings.Split(s.Text(), ":")
		if len(fields) > idField && fields[idField] == strconv.Itoa(id) {
			return fields
		}
	}
	return nil
}

type imageFile struct {
	uid  int
	mode os.FileMode
	data []byte
}

// imageFiles reads an archive written by `podman image save` or `docker
// image save` (both write a manifest.json naming the layers, in order) and
// applies its layers: the image's file tree, names relative to / and
// directories ending in "/".
func imageFiles(archive string) (map[string]*imageFile, error) {
	f, err := os.Open(archive)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	blobs := map[string][]byte{}
	tr := tar.NewReader(f)
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			return nil, err
		}
		if h.Typeflag == tar.TypeReg {
			if blobs[path.Clean(h.Name)], err = io.ReadAll(tr); err != nil {
				return nil, err
			}
		}
	}
	var manifest []struct{ Layers []string }
	if err := json.Unmarshal(blobs["manifest.json"], &manifest); err != nil || len(manifest) != 1 {
		return nil, fmt.Errorf("manifest.json: %d images, %v", len(manifest), err)
	}
	files := map[string]*imageFile{}
	for _, layer := range manifest[0].Layers {
		blob, ok := blobs[path.Clean(layer)]
		if !ok {
			return nil, fmt.Errorf("layer %s is not in the archive", layer)
		}
		if err := applyLayer(files, blob); err != nil {
			return nil, fmt.Errorf("layer %s: %w", layer, err)
		}
	}
	return files, nil
}

func applyLayer(files map[string]*imageFile, blob []byte) error {
	var r io.Reader = bytes.NewReader(blob)
	if bytes.HasPrefix(blob, []byte{0x1f, 0x8b}) {
		zr, err := gzip.NewReader(r)
		if err != nil {
			return err
		}
		r = zr
	}
	tr := tar.NewReader(r)
	for {
		h, err := tr.Next()
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return err
		}
		name := strings.TrimPrefix(path.Clean("/"+h.Name), "/")
		if name == "" {
			continue // the layer's root
		}
		if base := path.Base(name); strings.HasPrefix(base, ".wh.") {
			// A whiteout: a later layer deleted a file. Kept as an entry of
			// its own, since a single-stage scratch image should have none.
			files[name] = &imageFile{}
			continue
		}
		file := &imageFile{uid: h.Uid, mode: h.FileInfo().Mode()}
		switch h.Typeflag {
		case tar.TypeDir:
			name += "/"
		case tar.TypeReg:
			if file.data, err = io.ReadAll(tr); err != nil {
				return err
			}
		default:
			return errors.New(name + ": neither a file nor a directory (" + string(h.Typeflag) + ")")
		}
		files[name] = file
	}
}

func mapKeys(m map[string]struct{}) []string {
	var keys []string
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}

// mustRun runs a command and returns its standard output; a failure ends the
// test with everything it printed.
func mustRun(ctx context.Context, t *testing.T, name string, args ...string) []byte {
	t.Helper()
	cmd := exec.CommandContext(ctx, name, args...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s%s", name, strings.Join(args, " "), err, out, stderr.String())
	}
	return out
}

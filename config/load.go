package config

import (
	"bytes"
	_ "embed"
	"errors"
	"fmt"
	"io"
	"os"
	"reflect"
	"slices"
	"strings"

	"go.yaml.in/yaml/v3"
)

//go:embed default.yaml
var defaultYAML string

// Default returns the built-in configuration that Load uses when given no
// path: a loopback server with the in-process mock model, plus OpenAI and
// Anthropic models when OPENAI_API_KEY or ANTHROPIC_API_KEY is set.
func Default() []byte { return []byte(defaultYAML) }

// Load reads the configuration file at path and parses it with variables from
// the process environment. An empty path loads Default().
func Load(path string) (*Config, error) {
	if path == "" {
		return Parse(Default(), "default.yaml (built in)", os.Getenv)
	}
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("config: %w", err)
	}
	c, err := Parse(data, path, os.Getenv)
	if err != nil {
		return nil, err
	}
	c.File = path
	return c, nil
}

// Parse turns one YAML document into a validated Config. source names the
// document in error messages; getenv supplies ${NAME} values.
//
// In order, it: parses the YAML; expands ${NAME}, ${NAME:-default} and $$ in
// scalar values; rejects keys that name no field; decodes over the defaults;
// derives the defaults that depend on other fields; validates; and finally
// leaves out optional upstreams whose api_key is empty, with their routes and
// any model left without a route. Errors list every problem found at the
// stage that failed, each with its line or field path.
func Parse(data []byte, source string, getenv func(string) string) (*Config, error) {
	root, err := parseDocument(data)
	if err != nil {
		return nil, wrapErr(source, err)
	}

	var errs []error
	expandNode(root, getenv, &errs)
	checkNode(root, reflect.TypeFor[Config](), "", &errs)
	c := defaultConfig()
	if err := root.Decode(&c); err != nil {
		var te *yaml.TypeError
		switch {
		case errors.As(err, &te):
			for _, e := range te.Errors {
				errs = append(errs, errors.New(e))
			}
		case len(errs) == 0:
			// Any other error stops decoding and carries no line; those that
			// checkNode can find, it has already reported with one.
			errs = append(errs, err)
		}
	}
	if len(errs) > 0 {
		return nil, wrapErr(source, errors.Join(errs...))
	}

	c.deriveDefaults()
	// Validation comes before dropping optional upstreams so that the indexes
	// in its messages match the file, and so that a mistake is caught even
	// while the environment hides the part of the file it is in.
	if err := c.Validate(); err != nil {
		return nil, wrapErr(source, err)
	}
	c.dropOptional()
	if len(c.Models) == 0 {
		return nil, wrapErr(source, fmt.Errorf("models: none left after leaving out the optional upstreams %s, whose api_key is empty; set one of their keys, or add a model routed to an upstream that is not optional",
			strings.Join(c.DroppedUpstreams, ", ")))
	}
	return &c, nil
}

// parseDocument parses data as exactly one YAML document. An empty input
// gives an empty document, which decodes to the defaults.
func parseDocument(data []byte) (*yaml.Node, error) {
	dec := yaml.NewDecoder(bytes.NewReader(data))
	var root yaml.Node
	if err := dec.Decode(&root); err != nil && err != io.EOF {
		return nil, err
	}
	var next yaml.Node
	switch err := dec.Decode(&next); err {
	case io.EOF:
		return &root, nil
	case nil:
		return nil, fmt.Errorf("line %d: a second YAML document; put the whole configuration in one", next.Line)
	default:
		return nil, err
	}
}

// dropOptional leaves out the optional upstreams that have no api_key, their
// routes, and the models those were the only routes of.
func (c *Config) dropOptional() {
	dropped := make(map[string]bool)
	c.Upstreams = slices.DeleteFunc(c.Upstreams, func(u Upstream) bool {
		if u.Optional && u.APIKey == "" {
			dropped[u.Name] = true
			c.DroppedUpstreams = append(c.DroppedUpstreams, u.Name)
			return true
		}
		return false
	})
	if len(dropped) == 0 {
		return
	}
	var kept []Model
	for _, m := range c.Models {
		m.Routes = slices.DeleteFunc(m.Routes, func(r Route) bool { return dropped[r.Upstream] })
		if len(m.Routes) == 0 {
			c.DroppedModels = append(c.DroppedModels, m.Name)
			continue
		}
		kept = append(kept, m)
	}
	c.Models = kept
}

// wrapErr prefixes err with the package and source, and puts the problems
// of a joined error on lines of their own under a count.
func wrapErr(source string, err error) error {
	if j, ok := err.(interface{ Unwrap() []error }); ok && len(j.Unwrap()) > 1 {
		return fmt.Errorf("config: %s: %d problems:\n%w", source, len(j.Unwrap()), err)
	}
	return fmt.Errorf("config: %s: %w", source, err)
}

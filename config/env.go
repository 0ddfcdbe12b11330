package config

import (
	"errors"
	"fmt"
	"strings"

	"go.yaml.in/yaml/v3"
)

// expandNode expands ${NAME} references in the scalar values under n, in
// place. It works on the parsed tree rather than the file's text so that a
// variable's value can never change the document's structure (a secret
// containing ": " or "#" stays one string) and comments are never expanded.
// Mapping keys are not expanded.
func expandNode(n *yaml.Node, getenv func(string) string, errs *[]error) {
	switch n.Kind {
	case yaml.DocumentNode, yaml.SequenceNode:
		for _, c := range n.Content {
			expandNode(c, getenv, errs)
		}
	case yaml.MappingNode:
		for i := 1; i < len(n.Content); i += 2 {
			expandNode(n.Content[i], getenv, errs)
		}
	case yaml.ScalarNode:
		expandScalar(n, getenv, errs)
	}
	// An alias is not followed: its anchor is expanded where it is defined,
	// and expanding it twice would undo "$$" escapes.
}

func expandScalar(n *yaml.Node, getenv func(string) string, errs *[]error) {
	v, err := expand(n.Value, getenv)
	if err != nil {
		*errs = append(*errs, fmt.Errorf("line %d: %w", n.Line, err))
		return
	}
	if v == n.Value {
		return
	}
	n.Value = v
	if n.Style != 0 {
		// Quoted, block or explicitly tagged: the author asked for this type.
		return
	}
	// A plain scalar is typed again as if v had been written in its place, so
	// that "max_conns: ${CONNS}" decodes as an integer. An empty result reads
	// as null, which leaves the field's default; other null spellings ("null",
	// "~") stay strings, because environment values are text.
	n.Tag = ""
	if tag := n.ShortTag(); tag == "!!null" && v != "" {
		n.Tag = "!!str"
	} else {
		n.Tag = tag
	}
}

// expand replaces ${NAME} with getenv(NAME), ${NAME:-default} with default
// when NAME is unset or empty, and $$ with $. Any other $ is kept as is, so
// that secrets containing a lone $ need no escaping.
func expand(s string, getenv func(string) string) (string, error) {
	if !strings.Contains(s, "$") {
		return s, nil
	}
	var b strings.Builder
	for i := 0; i < len(s); {
		if s[i] != '$' || i+1 == len(s) {
			b.WriteByte(s[i])
			i++
			continue
		}
		switch s[i+1] {
		case '$':
			b.WriteByte('$')
			i += 2
		case '{':
			end := strings.IndexByte(s[i+2:], '}')
			if end < 0 {
				return "", errors.New(`"${" has no closing "}"; write ${NAME} or ${NAME:-default}, or $$ for a literal $`)
			}
			ref := s[i+2 : i+2+end]
			name, def, hasDef := strings.Cut(ref, ":-")
			if !validEnvName(name) {
				return "", fmt.Errorf("${%s}: %q is not a variable name; use letters, digits and '_' as in ${OPENAI_API_KEY} or ${NAME:-default}", ref, name)
			}
			if strings.Contains(def, "${") {
				return "", fmt.Errorf("${%s}: a default cannot contain another ${...}", ref)
			}
			v := getenv(name)
			if v == "" && hasDef {
				v = def
			}
			b.WriteString(v)
			i += 2 + end + 1
		default:
			b.WriteByte('$')
			i++
		}
	}
	return b.String(), nil
}

// validEnvName reports whether s is a POSIX shell variable name.
func validEnvName(s string) bool {
	if s == "" || s[0] >= '0' && s[0] <= '9' {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_') {
			return false
		}
	}
	return true
}

package config

import (
	"fmt"
	"reflect"
	"strings"

	"go.yaml.in/yaml/v3"

	"github.com/tokenhub/tokenhub/internal/usd"
)

// checkNode reports every mapping key under n that names no field of t, the
// type n decodes into, with its line, its path and the keys allowed there.
// It does the job of yaml's Decoder.KnownFields, which only applies when
// decoding text: Parse decodes a tree it has already expanded, and this also
// gives messages a reader can act on.
//
// It checks money amounts too, because usd.Micro's decoding errors
// carry neither line nor field.
func checkNode(n *yaml.Node, t reflect.Type, path string, errs *[]error) {
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	switch n.Kind {
	case yaml.ScalarNode:
		if t == reflect.TypeFor[usd.Micro]() && n.ShortTag() != "!!null" {
			if _, err := usd.Parse(n.Value); err != nil {
				*errs = append(*errs, fmt.Errorf("line %d: %s: %v; write US dollars such as 2.50", n.Line, path, err))
			}
		}
	case yaml.DocumentNode:
		for _, c := range n.Content {
			checkNode(c, t, path, errs)
		}
	case yaml.SequenceNode:
		if t.Kind() != reflect.Slice && t.Kind() != reflect.Array {
			return // a type mismatch, which decoding reports
		}
		for i, c := range n.Content {
			checkNode(c, t.Elem(), fmt.Sprintf("%s[%d]", path, i), errs)
		}
	case yaml.MappingNode:
		switch t.Kind() {
		case reflect.Map:
			for i := 0; i+1 < len(n.Content); i += 2 {
				checkNode(n.Content[i+1], t.Elem(), joinPath(path, n.Content[i].Value), errs)
			}
		case reflect.Struct:
			fields := yamlFields(t)
			for i := 0; i+1 < len(n.Content); i += 2 {
				k, v := n.Content[i], n.Content[i+1]
				if k.Value == "<<" && k.Style == 0 {
					checkNode(v, t, path, errs) // a merge key: v holds fields of t
					continue
				}
				ft, ok := fields[k.Value]
				if !ok {
					*errs = append(*errs, fmt.Errorf("line %d: %s: unknown key; the keys allowed here are %s",
						k.Line, joinPath(path, k.Value), strings.Join(fieldNames(t), ", ")))
					continue
				}
				checkNode(v, ft, joinPath(path, k.Value), errs)
			}
		}
	}
	// Aliases are not followed: their anchor was checked where it is defined,
	// and following them would let a small file expand into a huge walk.
}

// yamlFields maps the YAML keys of struct type t to their field types,
// following yaml.v3's rules: the tag's name, else the lower-cased field name;
// unexported fields and fields tagged "-" are not keys. Inline fields are not
// supported; no config type has one.
func yamlFields(t reflect.Type) map[string]reflect.Type {
	m := make(map[string]reflect.Type, t.NumField())
	for i := 0; i < t.NumField(); i++ {
		f := t.Field(i)
		if k := yamlKey(f); k != "" {
			m[k] = f.Type
		}
	}
	return m
}

// fieldNames returns the YAML keys of struct type t in declaration order.
func fieldNames(t reflect.Type) []string {
	var names []string
	for i := 0; i < t.NumField(); i++ {
		if k := yamlKey(t.Field(i)); k != "" {
			names = append(names, k)
		}
	}
	return names
}

// yamlKey returns the YAML key of struct field f, or "" if f is not decoded.
func yamlKey(f reflect.StructField) string {
	if !f.IsExported() {
		return ""
	}
	name, _, _ := strings.Cut(f.Tag.Get("yaml"), ",")
	switch name {
	case "-":
		return ""
	case "":
		return strings.ToLower(f.Name)
	}
	return name
}

// joinPath appends a key to a dotted field path.
func joinPath(path, key string) string {
	if path == "" {
		return key
	}
	return path + "." + key
}

package keys

import (
	"errors"
	"fmt"
	"strings"

	"github.com/tokenhub/tokenhub/internal/name"
	"github.com/tokenhub/tokenhub/internal/planrule"
	"github.com/tokenhub/tokenhub/internal/usd"
)

// Plan is what a key is allowed: which models, at what rates, for how much money.
// Limit fields of zero mean "no limit". A Plan is immutable once compiled and
// shared between goroutines.
type Plan struct {
	Name string `json:"name" yaml:"name"`
	// Models lists exact model names and globs where '*' matches any run of
	// characters ("gpt-4o*", "*"). A model matching none of them is refused.
	Models        []string  `json:"models" yaml:"models"`
	RPM           int64     `json:"rpm" yaml:"rpm"`
	TPM           int64     `json:"tpm" yaml:"tpm"`
	MaxRequestUSD usd.Micro `json:"max_request_usd" yaml:"max_request_usd"`
	MonthlyUSD    usd.Micro `json:"monthly_usd" yaml:"monthly_usd"`

	exact    map[string]struct{}
	globs    []string
	compiled bool
}

// maxPerMinute bounds rpm and tpm, a plan's and a key's own.
const maxPerMinute = planrule.MaxPerMinute

// ErrInvalidPlan is wrapped by every validation error of Plan.Compile.
var ErrInvalidPlan = errors.New("invalid plan")

// Compile validates p and prepares its whitelist for Allows. It must be called
// once before p is shared; store implementations call it on every plan they return.
func (p *Plan) Compile() error {
	if err := planrule.Check(p.Name, p.Models, p.RPM, p.TPM, p.MaxRequestUSD, p.MonthlyUSD); err != nil {
		return fmt.Errorf("%w: %w", ErrInvalidPlan, err)
	}
	p.exact = make(map[string]struct{}, len(p.Models))
	p.globs = p.globs[:0]
	for _, m := range p.Models {
		if strings.Contains(m, "*") {
			p.globs = append(p.globs, m)
		} else {
			p.exact[m] = struct{}{}
		}
	}
	p.compiled = true
	return nil
}

// Allows reports whether the plan's whitelist admits model. It does not allocate.
func (p *Plan) Allows(model []byte) bool {
	if !p.compiled {
		return false
	}
	if _, ok := p.exact[string(model)]; ok {
		return true
	}
	for _, g := range p.globs {
		if globMatch(g, model) {
			return true
		}
	}
	return false
}

// globMatch matches name against pattern, where '*' stands for any run of bytes
// (including none). It backtracks only to the last '*', so it runs in
// O(len(pattern)*len(name)) at worst and never recurses.
func globMatch(pattern string, name []byte) bool {
	p, n := 0, 0
	star, mark := -1, 0
	for n < len(name) {
		switch {
		case p < len(pattern) && pattern[p] == '*':
			star, mark = p, n
			p++
		case p < len(pattern) && pattern[p] == name[n]:
			p++
			n++
		case star >= 0:
			p = star + 1
			mark++
			n = mark
		default:
			return false
		}
	}
	for p < len(pattern) && pattern[p] == '*' {
		p++
	}
	return p == len(pattern)
}

// ValidName reports whether s is usable as a plan name or in a URL path:
// 1-64 bytes of ASCII letters, digits, '-', '_' and '.'.
func ValidName(s string) bool { return name.Valid(s) }

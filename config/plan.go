package config

import (
	"fmt"

	"github.com/tokenhub/tokenhub/internal/name"
	"github.com/tokenhub/tokenhub/internal/usd"
)

// Plan is a plan as the file declares it: which models, at what rates, for
// how much money. Limit fields of zero mean "no limit". The node turns each
// into a keys.Plan when it seeds the store; config keeps its own type so
// that it imports no package above it on the request path.
type Plan struct {
	Name string `yaml:"name"`
	// Models lists exact model names and globs where '*' matches any run of
	// characters ("gpt-4o*", "*"). A model matching none of them is refused.
	Models        []string  `yaml:"models"`
	RPM           int64     `yaml:"rpm"`
	TPM           int64     `yaml:"tpm"`
	MaxRequestUSD usd.Micro `yaml:"max_request_usd"`
	MonthlyUSD    usd.Micro `yaml:"monthly_usd"`
}

// maxPlanPerMinute bounds rpm and tpm so a token's refill time stays above
// 60ns; it is keys.Plan's bound.
const maxPlanPerMinute = 1_000_000_000

// check applies keys.Plan.Compile's rules, with its messages, so that
// check-config reports a bad plan with every other problem instead of the
// node refusing it at start. proxy's TestConfigPlansCheckedLikeKeys holds
// the two to the same answers.
func (pl *Plan) check() error {
	const invalid = "invalid plan"
	if !name.Valid(pl.Name) {
		return fmt.Errorf("%s: name %q: use 1-64 characters of letters, digits, '-', '_' or '.'", invalid, pl.Name)
	}
	if pl.RPM < 0 || pl.TPM < 0 || pl.MaxRequestUSD < 0 || pl.MonthlyUSD < 0 {
		return fmt.Errorf("%s: plan %q: rpm, tpm, max_request_usd and monthly_usd must not be negative", invalid, pl.Name)
	}
	if pl.MaxRequestUSD > usd.MaxCap || pl.MonthlyUSD > usd.MaxCap {
		return fmt.Errorf("%s: plan %q: max_request_usd and monthly_usd must be at most %s dollars (0 means no limit)", invalid, pl.Name, usd.MaxCap)
	}
	if pl.RPM > maxPlanPerMinute || pl.TPM > maxPlanPerMinute {
		return fmt.Errorf("%s: plan %q: rpm and tpm must be at most %d (0 means no limit)", invalid, pl.Name, maxPlanPerMinute)
	}
	for _, m := range pl.Models {
		if m == "" || len(m) > 256 {
			return fmt.Errorf("%s: plan %q: model pattern %q must be 1-256 characters", invalid, pl.Name, m)
		}
	}
	return nil
}

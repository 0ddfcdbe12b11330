package config

import (
	"fmt"

	"github.com/tokenhub/tokenhub/internal/planrule"
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

// check applies the plan rules the key store applies (internal/planrule),
// so that check-config reports a bad plan with every other problem instead
// of the node refusing it at start.
func (pl *Plan) check() error {
	if err := planrule.Check(pl.Name, pl.Models, pl.RPM, pl.TPM, pl.MaxRequestUSD, pl.MonthlyUSD); err != nil {
		return fmt.Errorf("invalid plan: %w", err)
	}
	return nil
}

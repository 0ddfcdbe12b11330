// Package planrule is the one statement of what makes a plan valid, so that
// the config file (check-config, reload) and the key store judge a plan the
// same way with the same words. It is a leaf: it imports only other leaves.
package planrule

import (
	"fmt"

	"github.com/tokenhub/tokenhub/internal/name"
	"github.com/tokenhub/tokenhub/internal/usd"
)

// MaxPerMinute bounds rpm and tpm (a plan's and a key's own) so a token's
// refill time stays above 60ns.
const MaxPerMinute = 1_000_000_000

// MaxModelPattern is the longest model name or glob a plan may list.
const MaxModelPattern = 256

// Check reports what is wrong with a plan of these fields, or nil. The
// message names the plan and the field; callers add their own prefix.
func Check(planName string, models []string, rpm, tpm int64, maxRequest, monthly usd.Micro) error {
	if !name.Valid(planName) {
		return fmt.Errorf("name %q: use 1-64 characters of letters, digits, '-', '_' or '.'", planName)
	}
	if rpm < 0 || tpm < 0 || maxRequest < 0 || monthly < 0 {
		return fmt.Errorf("plan %q: rpm, tpm, max_request_usd and monthly_usd must not be negative", planName)
	}
	if maxRequest > usd.MaxCap || monthly > usd.MaxCap {
		return fmt.Errorf("plan %q: max_request_usd and monthly_usd must be at most %s dollars (0 means no limit)", planName, usd.MaxCap)
	}
	if rpm > MaxPerMinute || tpm > MaxPerMinute {
		return fmt.Errorf("plan %q: rpm and tpm must be at most %d (0 means no limit)", planName, MaxPerMinute)
	}
	for _, m := range models {
		if m == "" || len(m) > MaxModelPattern {
			return fmt.Errorf("plan %q: model pattern %q must be 1-%d characters", planName, m, MaxModelPattern)
		}
	}
	return nil
}

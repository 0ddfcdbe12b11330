package valkeyx

import (
	"context"
	"time"

	"github.com/valkey-io/valkey-go"
)

// observedClient reports the duration and outcome of every command and
// pipeline. Scripts (valkey.Lua) and publishes go through Do and DoMulti, so
// wrapping those two sees every call but the long-lived subscription, whose
// health the Invalidator reports.
type observedClient struct {
	valkey.Client
	observe func(time.Duration, error)
}

func (c observedClient) Do(ctx context.Context, cmd valkey.Completed) valkey.ValkeyResult {
	start := time.Now()
	r := c.Client.Do(ctx, cmd)
	c.observe(time.Since(start), replyError(r.Error()))
	return r
}

func (c observedClient) DoMulti(ctx context.Context, cmds ...valkey.Completed) []valkey.ValkeyResult {
	start := time.Now()
	rs := c.Client.DoMulti(ctx, cmds...)
	var err error
	for _, r := range rs {
		if err = replyError(r.Error()); err != nil {
			break
		}
	}
	c.observe(time.Since(start), err)
	return rs
}

// replyError is err unless it is Valkey's nil reply, which is an answer, or
// NOSCRIPT, which valkey.Lua answers by sending the script itself.
func replyError(err error) error {
	if valkey.IsValkeyNil(err) {
		return nil
	}
	if ve, ok := valkey.IsValkeyErr(err); ok && ve.IsNoScript() {
		return nil
	}
	return err
}

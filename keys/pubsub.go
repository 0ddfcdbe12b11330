package keys

import (
	"context"
	"fmt"

	"github.com/valkey-io/valkey-go"
)

// ValkeyPubSub carries invalidations over Valkey pub/sub.
type ValkeyPubSub struct {
	client  valkey.Client
	channel string
}

// NewValkeyPubSub returns the PubSub for the store namespace prefix, on the
// channel ValkeyStore publishes its writes to.
func NewValkeyPubSub(c valkey.Client, prefix string) *ValkeyPubSub {
	return &ValkeyPubSub{client: c, channel: InvalidationChannel(prefix)}
}

// InvalidationChannel is the pub/sub channel of a store namespace.
func InvalidationChannel(prefix string) string { return prefix + ":invalidate" }

// Publish sends msg to every node.
func (p *ValkeyPubSub) Publish(ctx context.Context, msg string) error {
	if err := p.client.Do(ctx, p.client.B().Publish().Channel(p.channel).Message(msg).Build()).Error(); err != nil {
		return fmt.Errorf("keys: publish on %s: %w", p.channel, err)
	}
	return nil
}

// Subscribe holds a dedicated connection subscribed to the channel until ctx
// ends or the connection breaks (a restart, or CLIENT KILL TYPE pubsub).
func (p *ValkeyPubSub) Subscribe(ctx context.Context, ready func(), handle func(string)) error {
	c, release := p.client.Dedicate()
	defer release()
	subscribed := make(chan struct{}, 1)
	broken := c.SetPubSubHooks(valkey.PubSubHooks{
		OnMessage: func(m valkey.PubSubMessage) { handle(m.Message) },
		OnSubscription: func(s valkey.PubSubSubscription) {
			if s.Kind == "subscribe" {
				select {
				case subscribed <- struct{}{}:
				default:
				}
			}
		},
	})
	if err := c.Do(ctx, c.B().Subscribe().Channel(p.channel).Build()).Error(); err != nil {
		return fmt.Errorf("keys: subscribe to %s: %w", p.channel, err)
	}
	select {
	case <-subscribed:
		ready()
	case err := <-broken:
		return fmt.Errorf("keys: subscribe to %s: %w", p.channel, err)
	case <-ctx.Done():
		return ctx.Err()
	}
	select {
	case err := <-broken:
		return fmt.Errorf("keys: subscription to %s: %w", p.channel, err)
	case <-ctx.Done():
		return ctx.Err()
	}
}

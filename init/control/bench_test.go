package control

import (
	"context"
	"testing"
)

// BenchmarkHealthRoundTrip measures one Health request and its reply over
// the real socket, client to server and back.
func BenchmarkHealthRoundTrip(b *testing.B) {
	f := start(b, func(c *Config) { c.ConnRate, c.ConnBurst, c.GlobalRate, c.GlobalBurst = 1e9, 1e9, 1e9, 1e9 })
	c, err := Dial(f.path)
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close()
	ctx := context.Background()
	b.ReportAllocs()
	for b.Loop() {
		if err := c.Health(ctx, Health{Ready: true, Detail: "ok"}); err != nil {
			b.Fatal(err)
		}
	}
}

package sse_test

import (
	"fmt"
	"strings"

	"github.com/tokenhub/tokenhub/sse"
)

// A relay feeds the Scanner whatever each read brings, split anywhere, and
// takes complete events out: their data to read usage from, their raw bytes
// to pass on unchanged. Reading the data is the protocol's business
// (proxy/openai for OpenAI chunks).
func ExampleScanner() {
	s := sse.NewScanner(1 << 20)
	stream := "data: {\"choices\":[{\"delta\":{\"content\":\"Hi\"}}]}\n\n" +
		"data: {\"choices\":[],\"usage\":{\"prompt_tokens\":9,\"completion_tokens\":1}}\n\n" +
		"data: [DONE]\n\n"
	var relayed strings.Builder
	for _, read := range []string{stream[:7], stream[7:60], stream[60:]} {
		s.Feed([]byte(read))
		for {
			ev, ok, err := s.Next()
			if err != nil || !ok {
				break // an over-long event, or the rest is not in yet
			}
			relayed.Write(ev.Raw)
			if ev.IsDone() {
				fmt.Println("done")
				continue
			}
			fmt.Println("data:", len(ev.Data), "bytes")
		}
	}
	fmt.Println("byte for byte:", relayed.String() == stream)
	// Output:
	// data: 40 bytes
	// data: 64 bytes
	// done
	// byte for byte: true
}

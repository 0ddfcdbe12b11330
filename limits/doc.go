// Package limits enforces what a plan sells: request and token rates, and money
// per request and per month. Money is always an integer count of micro-dollars
// (usd.Micro) or, for exact costs, pico-dollars (usd.Pico).
package limits

package config

import (
	"strings"
	"testing"
)

func TestParseByteSize(t *testing.T) {
	f := func(in string, want ByteSize) {
		t.Helper()
		got, err := ParseByteSize(in)
		if err != nil {
			t.Fatalf("ParseByteSize(%q): %v", in, err)
		}
		if got != want {
			t.Fatalf("ParseByteSize(%q) = %d, want %d", in, got, want)
		}
	}
	f("0", 0)
	f("16777216", 16<<20)
	f("1024B", 1024)
	f("512KiB", 512<<10)
	f("16MiB", 16<<20)
	f("1GiB", 1<<30)
	f("16 MiB", 16<<20)
	f(" 16mib ", 16<<20)
	f("500KB", 500_000)
	f("16MB", 16_000_000)
	f("1GB", 1_000_000_000)
	f("8388608GiB", 1<<53)
}

func TestParseByteSizeRejects(t *testing.T) {
	for _, in := range []string{"", "MiB", "-1", "-1KiB", "1.5MiB", "16M", "16 Mi B", "0x10", "1e6", "16MiBs", "9223372036854775807KiB"} {
		if got, err := ParseByteSize(in); err == nil {
			t.Errorf("ParseByteSize(%q) = %d, want an error", in, got)
		}
	}
}

func TestByteSizeString(t *testing.T) {
	f := func(b ByteSize, want string) {
		t.Helper()
		if got := b.String(); got != want {
			t.Fatalf("ByteSize(%d).String() = %q, want %q", int64(b), got, want)
		}
	}
	f(0, "0B")
	f(1500, "1500B")
	f(KiB, "1KiB")
	f(16*MiB, "16MiB")
	f(1536*KiB, "1536KiB")
	f(2*GiB, "2GiB")
}

func TestMaxBodyBytesInYAML(t *testing.T) {
	f := func(value string, want ByteSize) {
		t.Helper()
		c, err := Parse([]byte(minimal+"max_body_bytes: "+value+"\n"), "test.yaml", env())
		if err != nil {
			t.Fatalf("max_body_bytes: %s: %v", value, err)
		}
		if c.MaxBodyBytes != want {
			t.Fatalf("max_body_bytes: %s gave %d, want %d", value, c.MaxBodyBytes, want)
		}
	}
	f("16777216", 16*MiB)
	f("512KiB", 512*KiB)
	f(`"1 GiB"`, GiB)
	f("1MB", 1_000_000)

	g := func(value, want string) {
		t.Helper()
		_, err := Parse([]byte(minimal+"max_body_bytes: "+value+"\n"), "test.yaml", env())
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Fatalf("max_body_bytes: %s gave error %v, want one containing %q", value, err, want)
		}
	}
	g("16M", `line 3: "16M" is not a size; write a whole number of bytes, or one with a unit such as 512KiB, 16MiB or 1GiB`)
	g("[1]", "line 3: want a size such as 16MiB or 16777216")
	g("512", "max_body_bytes: 512 bytes is out of range; use from 1KiB to 1GiB, or remove it for the default 16MiB")
	g("2GiB", "max_body_bytes: 2147483648 bytes is out of range")
}

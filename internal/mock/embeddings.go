package mock

import (
	"encoding/base64"
	"encoding/binary"
	"math"
	"strconv"

	"github.com/valyala/fasthttp"
)

// writeEmbeddings answers an embeddings request: one vector per input, each
// derived from a hash of the input's JSON text, so the same input always gets
// the same vector.
func (s *Server) writeEmbeddings(ctx *fasthttp.RequestCtx, r *request) {
	buf := s.getBuffer()
	b := append(buf.b[:0], `{"object":"list","data":[`...)
	index := 0
	each := func(input []byte) {
		if index > 0 {
			b = append(b, ',')
		}
		b = append(b, `{"object":"embedding","index":`...)
		b = strconv.AppendInt(b, int64(index), 10)
		b = append(b, `,"embedding":`...)
		if r.base64 {
			buf.tmp = appendVectorLE(buf.tmp[:0], input, r.dims)
			b = append(b, '"')
			b = base64.StdEncoding.AppendEncode(b, buf.tmp)
			b = append(b, '"')
		} else {
			b = appendVectorJSON(b, input, r.dims)
		}
		b = append(b, '}')
		index++
	}
	if r.input[0] == '"' || isTokenArray(r.input) {
		each(r.input)
	} else {
		els := newElements(r.input, 0)
		for {
			if _, ok := els.next(); !ok {
				break
			}
			each(els.value())
		}
	}
	b = append(b, `],"model":`...)
	b = append(b, r.model...)
	b = append(b, `,"usage":{"prompt_tokens":`...)
	b = strconv.AppendInt(b, int64(r.promptTokens), 10)
	b = append(b, `,"total_tokens":`...)
	b = strconv.AppendInt(b, int64(r.promptTokens), 10)
	b = append(b, "}}"...)
	ctx.SetContentTypeBytes(contentTypeJSON)
	ctx.SetBody(b)
	buf.b = b
	s.putBuffer(buf)
}

// Embedding values are whole millionths, m/1e6, so the float text is short
// and exact to write, and the float32 sent in base64, float32(m)/1e6 (one
// correctly rounded division of exact operands), is exactly what a client
// parsing the text as float32 gets. They are uniform in [-a, a] with
// a = sqrt(3/dims), which makes the vectors close to unit length, as OpenAI's are.

// vector generates the millionths of input's embedding, calling emit for each.
type vector struct {
	state uint64 // splitmix64
	amp   uint64 // a in millionths
}

func newVector(input []byte, dims int) vector {
	// FNV-1a: cheap, and any change to the input changes the vector.
	h := uint64(14695981039346656037)
	for _, c := range input {
		h ^= uint64(c)
		h *= 1099511628211
	}
	return vector{state: h, amp: uint64(math.Round(math.Sqrt(3/float64(dims)) * 1e6))}
}

func (v *vector) next() int64 {
	v.state += 0x9e3779b97f4a7c15
	z := v.state
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9
	z = (z ^ (z >> 27)) * 0x94d049bb133111eb
	z ^= z >> 31
	// Scale the top 32 bits to [0, 2a] with a multiply instead of a division
	// (Lemire's method): a modulo per value was a fifth of the whole answer.
	return int64((z>>32)*(2*v.amp+1)>>32) - int64(v.amp)
}

// appendVectorJSON appends input's embedding as a JSON array of numbers.
func appendVectorJSON(b, input []byte, dims int) []byte {
	v := newVector(input, dims)
	b = append(b, '[')
	for i := range dims {
		if i > 0 {
			b = append(b, ',')
		}
		b = appendMillionths(b, v.next())
	}
	return append(b, ']')
}

// appendVectorLE appends input's embedding as little-endian float32s, the
// bytes OpenAI base64-encodes for encoding_format "base64".
func appendVectorLE(b, input []byte, dims int) []byte {
	v := newVector(input, dims)
	for range dims {
		f := float32(v.next()) / 1e6
		b = binary.LittleEndian.AppendUint32(b, math.Float32bits(f))
	}
	return b
}

// appendMillionths appends m/1e6 in decimal with six fraction digits. It is
// the inner loop of a float embedding (1536 values), hence the digit-pair table.
func appendMillionths(b []byte, m int64) []byte {
	if m < 0 {
		b = append(b, '-')
		m = -m
	}
	if m < 1e6 {
		b = append(b, '0')
	} else {
		b = strconv.AppendInt(b, m/1e6, 10)
	}
	frac := m % 1e6
	hi, mid, lo := frac/10000*2, frac/100%100*2, frac%100*2
	return append(b, '.', digitPairs[hi], digitPairs[hi+1], digitPairs[mid], digitPairs[mid+1], digitPairs[lo], digitPairs[lo+1])
}

const digitPairs = "00010203040506070809" + "10111213141516171819" + "20212223242526272829" + "30313233343536373839" +
	"40414243444546474849" + "50515253545556575859" + "60616263646566676869" + "70717273747576777879" +
	"80818283848586878889" + "90919293949596979899"

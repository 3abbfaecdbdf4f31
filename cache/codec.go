package cache

import (
	"encoding/binary"
	"encoding/json"
	"fmt"
	"math"
	"strings"
)

// Codec turns values of one entity kind into bytes and back. Its ID is part
// of every Redis key of the kind, so changing the encoding (and its ID) never
// makes an instance read bytes written by another encoding.
// Implementations must be safe for concurrent use.
type Codec[V any] interface {
	// ID names the encoding and its version, e.g. "j1" or "b3". It must be
	// non-empty and must not contain ':'.
	ID() string
	// Append appends the encoding of v to dst and returns the extended slice.
	Append(dst []byte, v V) ([]byte, error)
	// Decode decodes data (which it must not retain). It returns an error
	// wrapping ErrCorrupt when data is not a valid encoding.
	Decode(data []byte) (V, error)
}

// JSON returns a Codec that encodes with encoding/json. It works for any
// JSON-serializable V and is the default of EntityConfig.Codec; Binary is
// several times faster and smaller (see BenchmarkCodec).
func JSON[V any]() Codec[V] { return jsonCodec[V]{} }

type jsonCodec[V any] struct{}

func (jsonCodec[V]) ID() string { return "j1" }

func (jsonCodec[V]) Append(dst []byte, v V) ([]byte, error) {
	b, err := json.Marshal(v)
	if err != nil {
		return dst, fmt.Errorf("cache: json encode: %w", err)
	}
	return append(dst, b...), nil
}

func (jsonCodec[V]) Decode(data []byte) (V, error) {
	var v V
	if err := json.Unmarshal(data, &v); err != nil {
		return v, fmt.Errorf("%w: json: %v", ErrCorrupt, err)
	}
	return v, nil
}

// Binary returns a compact Codec built from an encode and a decode function
// written against Writer and Reader (length-prefixed strings, varints).
// version names the layout: bump it whenever enc/dec change, and old cached
// bytes are never read again (ID is "b<version>"). dec need not check for
// errors after each field: Reader errors are sticky and Decode reports the
// first one, and also reports trailing bytes, both wrapping ErrCorrupt.
// The returned Codec is safe for concurrent use if enc and dec are.
func Binary[V any](version uint, enc func(w *Writer, v V), dec func(r *Reader) V) Codec[V] {
	return binaryCodec[V]{id: fmt.Sprintf("b%d", version), enc: enc, dec: dec}
}

type binaryCodec[V any] struct {
	id  string
	enc func(w *Writer, v V)
	dec func(r *Reader) V
}

func (c binaryCodec[V]) ID() string { return c.id }

func (c binaryCodec[V]) Append(dst []byte, v V) ([]byte, error) {
	w := Writer{buf: dst}
	c.enc(&w, v)
	return w.buf, nil
}

func (c binaryCodec[V]) Decode(data []byte) (V, error) {
	r := Reader{buf: data}
	v := c.dec(&r)
	if r.err == nil && len(r.buf) != 0 {
		r.err = fmt.Errorf("%w: %d trailing bytes", ErrCorrupt, len(r.buf))
	}
	if r.err != nil {
		var zero V
		return zero, r.err
	}
	return v, nil
}

// Writer appends a compact binary encoding to a buffer. The zero value is
// ready to use. Not safe for concurrent use.
type Writer struct{ buf []byte }

// Bytes returns the encoding written so far.
func (w *Writer) Bytes() []byte { return w.buf }

// Uvarint writes x as an unsigned varint (1 byte below 128).
func (w *Writer) Uvarint(x uint64) { w.buf = binary.AppendUvarint(w.buf, x) }

// Varint writes x as a zig-zag signed varint.
func (w *Writer) Varint(x int64) { w.buf = binary.AppendVarint(w.buf, x) }

// Bool writes b as one byte.
func (w *Writer) Bool(b bool) {
	if b {
		w.buf = append(w.buf, 1)
	} else {
		w.buf = append(w.buf, 0)
	}
}

// String writes s, length-prefixed.
func (w *Writer) String(s string) {
	w.buf = binary.AppendUvarint(w.buf, uint64(len(s)))
	w.buf = append(w.buf, s...)
}

// Blob writes b, length-prefixed.
func (w *Writer) Blob(b []byte) {
	w.buf = binary.AppendUvarint(w.buf, uint64(len(b)))
	w.buf = append(w.buf, b...)
}

// Float64 writes f as 8 bytes.
func (w *Writer) Float64(f float64) {
	w.buf = binary.LittleEndian.AppendUint64(w.buf, math.Float64bits(f))
}

// Strings writes a count followed by each string.
func (w *Writer) Strings(ss []string) {
	w.Uvarint(uint64(len(ss)))
	for _, s := range ss {
		w.String(s)
	}
}

// Reader decodes what a Writer wrote. Errors are sticky: after the first one
// every method returns a zero value, and Err reports it (wrapping
// ErrCorrupt). Reader never panics on malformed input and never allocates
// more than the input's length for a count or a string.
type Reader struct {
	buf []byte
	err error
}

// NewReader returns a Reader over data.
func NewReader(data []byte) *Reader { return &Reader{buf: data} }

// Err returns the first decoding error, or nil.
func (r *Reader) Err() error { return r.err }

func (r *Reader) fail(what string) {
	if r.err == nil {
		r.err = fmt.Errorf("%w: bad %s", ErrCorrupt, what)
	}
	r.buf = nil
}

// Uvarint reads an unsigned varint.
func (r *Reader) Uvarint() uint64 {
	if r.err != nil {
		return 0
	}
	x, n := binary.Uvarint(r.buf)
	if n <= 0 {
		r.fail("uvarint")
		return 0
	}
	r.buf = r.buf[n:]
	return x
}

// Varint reads a signed varint.
func (r *Reader) Varint() int64 {
	if r.err != nil {
		return 0
	}
	x, n := binary.Varint(r.buf)
	if n <= 0 {
		r.fail("varint")
		return 0
	}
	r.buf = r.buf[n:]
	return x
}

// Bool reads one byte written by Writer.Bool.
func (r *Reader) Bool() bool {
	if r.err != nil {
		return false
	}
	if len(r.buf) == 0 || r.buf[0] > 1 {
		r.fail("bool")
		return false
	}
	b := r.buf[0] == 1
	r.buf = r.buf[1:]
	return b
}

func (r *Reader) blob() []byte {
	n := r.Uvarint()
	if r.err != nil {
		return nil
	}
	if n > uint64(len(r.buf)) {
		r.fail("length")
		return nil
	}
	b := r.buf[:n:n]
	r.buf = r.buf[n:]
	return b
}

// String reads a length-prefixed string.
func (r *Reader) String() string { return string(r.blob()) }

// Blob reads length-prefixed bytes into a new slice (nil when empty).
func (r *Reader) Blob() []byte {
	b := r.blob()
	if len(b) == 0 {
		return nil
	}
	return append([]byte(nil), b...)
}

// Float64 reads 8 bytes written by Writer.Float64.
func (r *Reader) Float64() float64 {
	if r.err != nil {
		return 0
	}
	if len(r.buf) < 8 {
		r.fail("float64")
		return 0
	}
	f := math.Float64frombits(binary.LittleEndian.Uint64(r.buf))
	r.buf = r.buf[8:]
	return f
}

// Count reads an element count written with Writer.Uvarint before a list
// whose elements take at least one byte each; a count larger than the bytes
// left is an error, so a corrupt count never causes a huge allocation.
func (r *Reader) Count() int {
	n := r.Uvarint()
	if r.err != nil {
		return 0
	}
	if n > uint64(len(r.buf)) {
		r.fail("count")
		return 0
	}
	return int(n)
}

// Strings reads what Writer.Strings wrote (nil for an empty list).
func (r *Reader) Strings() []string {
	n := r.Count()
	if n == 0 {
		return nil
	}
	ss := make([]string, n)
	for i := range ss {
		ss[i] = r.String()
	}
	if r.err != nil {
		return nil
	}
	return ss
}

func validCodecID(id string) bool {
	return id != "" && !strings.ContainsAny(id, ":{}")
}
